"""`python -m training.error_regions`: the missed and wrongly marked pixels, region by region."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from training.error_regions import Region, describe, iou_if_right, main, regions_of, share_by_size

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "camvid"


def test_regions_are_counted_apart_with_their_wrong_pixels():
    mask = np.zeros((20, 40), bool)
    mask[2:6, 2:6] = True  # 16 px, 4 of them wrong
    mask[10:20, 20:40] = True  # 200 px, none wrong
    wrong = np.zeros_like(mask)
    wrong[2, 2:6] = True
    regions = sorted(regions_of(mask, wrong, "frame"), key=lambda region: region.area)
    assert [(region.area, region.wrong, region.box) for region in regions] == [(16, 4, (2, 2, 4, 4)),
                                                                               (200, 0, (20, 10, 20, 10))]
    assert [region.size_class for region in regions] == ["medium, 0.5-5%", "large, >= 5%"]  # 2% and 25% of 800 px


def test_shares_and_the_iou_if_right_follow_the_pixel_counts():
    regions = [Region("a", 1000, 300, (0, 0, 1, 1), 0.001), Region("b", 50000, 700, (0, 0, 1, 1), 0.2)]
    assert share_by_size(regions) == {"small, < 0.5% of the frame": 0.3, "medium, 0.5-5%": 0.0, "large, >= 5%": 0.7}
    totals = {"found": 9000, "marked_not_car": 1000, "missed": 1000}
    assert iou_if_right(totals, regions[1:], "missed") == 9700 / 11000
    assert iou_if_right(totals, regions[1:], "marked_not_car") == 9000 / 10300


def test_the_command_counts_what_a_direct_count_gives(tiny_bundle_dir, tmp_path, capsys):
    gallery = tmp_path / "missed.png"
    assert main([str(tiny_bundle_dir), "--data-dir", str(FIXTURES), "--threshold", "0.5", "--top", "3",
                 "--gallery", str(gallery)]) == 0
    out = capsys.readouterr().out
    assert cv2.imread(str(gallery)) is not None
    missed = int(re.search(r"\((\d+) car pixels missed", out).group(1))
    # The same count without the tool: the engine's answers against the label PNGs.
    from demo.loading import load_bundle
    from demo.engine import SegmentationEngine
    from demo.imaging import load_rgb

    bundle = load_bundle(tiny_bundle_dir)
    engine = SegmentationEngine(bundle.model, bundle.config)
    expected = 0
    for image_path in sorted((FIXTURES / "val").glob("*.png")):
        truth = cv2.imread(str(FIXTURES / "valannot" / image_path.name), cv2.IMREAD_UNCHANGED) == 8
        expected += np.count_nonzero(truth & (engine.predict_probabilities(load_rgb(image_path)) < 0.5))
    assert missed == expected
    assert "missed car pixels by the size of their car region" in out
    assert "wrongly marked pixels by the size of their marked region" in out


def test_a_folder_that_is_not_a_bundle_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path), "--data-dir", str(FIXTURES)]) == 1
    assert "is not a model bundle" in capsys.readouterr().err


def test_the_account_and_the_gallery_legend_name_the_bundles_class():
    from training.evaluate import ERROR_COLOURS, error_legend

    regions = [Region("a", 1000, 300, (0, 0, 1, 1), 0.001)]
    result = {"totals": {"found": 9000, "marked_not_car": 1000, "missed": 1000}, "car_regions": regions,
              "marked_regions": regions}
    text = describe(result, 1, "pedestrian")
    assert "(1000 pedestrian pixels missed, 1000 marked wrongly)" in text
    assert "the 1 pedestrian regions with the most missed pedestrian pixels" in text and "px not pedestrian" in text
    assert not re.search(r"\bcars?\b", text)
    legend = error_legend("pedestrian")
    assert list(legend) == ["pedestrian found", "marked, not pedestrian", "pedestrian missed"]
    assert list(legend.values()) == list(ERROR_COLOURS.values())
