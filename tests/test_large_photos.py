"""training.large_photos: held-out frames laid out in grids, fed at several areas, scored frame by frame."""
from __future__ import annotations

import numpy as np
from PIL import Image

from helpers import red_channel_model, serving_config
from training.bundle import write_bundle
from training.large_photos import grids_of, main, tile

CAR = 8


def dotted_drive(folder, frames: int = 5) -> None:
    """A held-out drive in the SegNet layout: 360x480 frames whose cars are 2x2-pixel dots, drawn in red
    (what the red-channel model answers) and labelled car in the truth."""
    (folder / "val").mkdir(parents=True)
    (folder / "valannot").mkdir()
    for index in range(frames):
        dots = np.zeros((360, 480), bool)  # 8 pixels apart, a different share of them in each frame
        for row, column in ((2, 2), (2, 3), (3, 2), (3, 3)):
            dots[row::8, column::8] = True
        dots &= np.kron(np.random.default_rng(index).random((45, 60)) < 0.5, np.ones((8, 8), bool))
        rgb = np.zeros((360, 480, 3), np.uint8)
        rgb[..., 0] = np.where(dots, 255, 0)
        rgb[..., 1] = 90
        Image.fromarray(rgb).save(folder / "val" / f"0006R0_{index:05d}.png")
        Image.fromarray(np.where(dots, CAR, 3).astype(np.uint8)).save(folder / "valannot" / f"0006R0_{index:05d}.png")


def test_grids_hold_consecutive_frames_and_complete_the_last_from_the_start():
    assert grids_of(list(range(5)), 1) == [[0], [1], [2], [3], [4]]
    assert grids_of(list(range(5)), 2) == [[0, 1, 2, 3], [4, 0, 1, 2]]
    pictures = [np.full((2, 3), value) for value in range(4)]
    np.testing.assert_array_equal(tile(pictures, 2), np.block([[pictures[0], pictures[1]], [pictures[2], pictures[3]]]))


def test_a_grid_fed_at_the_training_area_loses_small_cars_that_more_pixels_find(tmp_path, capsys):
    bundle = write_bundle(tmp_path / "bundle", red_channel_model(),
                          serving_config((180, 240), "keep_aspect", 16))
    dotted_drive(tmp_path / "data")

    assert main(["--held-out", str(bundle), str(tmp_path / "data"), "--grids", "1", "2",
                 "--feeds", "180x240", "360x480", "720x960", "--latency-bundle", str(bundle), "--rounds", "1"]) == 0

    rows = {line.split("|")[1].strip() + " @ " + line.split("|")[3].strip(): line.split("|")
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "frames," in line}
    # A 480x360 frame is never fed above its own size: its rows are 240x180 and 480x360, once each.
    assert list(rows) == ["1x1 frames, 480x360 @ 240x180", "1x1 frames, 480x360 @ 480x360",
                          "2x2 frames, 960x720 @ 240x180", "2x2 frames, 960x720 @ 480x360",
                          "2x2 frames, 960x720 @ 960x720"]
    iou = {name: float(cells[4]) for name, cells in rows.items()}
    # Each frame is counted once: at its own size every dot is found, alone or four to a photo.
    assert iou["1x1 frames, 480x360 @ 480x360"] == 1.0 and iou["2x2 frames, 960x720 @ 960x720"] == 1.0
    # At a quarter of their size the dots fade under the threshold; at half they survive, blurred.
    assert iou["2x2 frames, 960x720 @ 240x180"] < 0.05 < iou["2x2 frames, 960x720 @ 480x360"]
    assert all(float(cells[6]) > 0 for cells in rows.values())  # a time for every row
