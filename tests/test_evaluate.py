"""`python -m training.evaluate` on the shipped CamVid fixtures: the figures it prints are the ones
a direct count of the served probabilities against the label PNGs gives."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from demo.loading import load_bundle
from demo.model_facts import TEST_TIME_FLIP
from demo.engine import SegmentationEngine
from demo.imaging import load_rgb
from training.data import CAR_CLASS_ID
from training.evaluate import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "camvid"


def direct_iou(engine: SegmentationEngine, threshold: float) -> float:
    """Car IoU over the val fixtures, pooled over all pixels, counted here without the training code."""
    intersection = union = 0
    for image_path in sorted((FIXTURES / "val").glob("*.png")):
        truth = cv2.imread(str(FIXTURES / "valannot" / image_path.name), cv2.IMREAD_UNCHANGED) == CAR_CLASS_ID
        predicted = engine.predict_probabilities(load_rgb(image_path)) >= threshold
        assert predicted.shape == truth.shape  # at the frame's own size, not the network's
        intersection += np.count_nonzero(truth & predicted)
        union += np.count_nonzero(truth | predicted)
    return intersection / union


@pytest.fixture
def bundle_copy(tiny_bundle_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))


def test_evaluate_prints_and_writes_the_figures_a_direct_count_gives(bundle_copy, capsys):
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--split", "val"]) == 0

    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads((bundle_copy / "evaluation_val.json").read_text())
    assert printed["metrics"] == written["metrics"] and printed["images"] == written["images"] == 2
    assert printed["runtime"] == "onnxruntime"
    for name in ("threshold_sweep_val.png", "gallery_val.png"):
        assert cv2.imread(str(bundle_copy / name)) is not None, name

    bundle = load_bundle(bundle_copy)
    engine = SegmentationEngine(bundle.model, bundle.config, runtime="tensorflow")
    assert printed["metrics"]["iou"] == pytest.approx(direct_iou(engine, printed["threshold"]), abs=1e-4)
    best = printed["metrics_at_best_threshold"]["iou"]
    assert best == pytest.approx(direct_iou(engine, printed["best_threshold"]), abs=1e-4)
    assert best >= printed["metrics"]["iou"]
    assert set(written["per_image_iou"]["all"]) == {"0016E5_07959", "0016E5_08137"}


def test_evaluate_says_what_is_wrong_with_a_missing_split(bundle_copy, tmp_path, capsys):
    assert main([str(bundle_copy), "--data-dir", str(tmp_path), "--split", "test"]) == 1
    assert "error: No 'test' split in" in capsys.readouterr().err


def test_update_bundle_records_what_was_measured_with_mirror_averaging(bundle_copy, capsys):
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--test-time-flip", "on", "--update-bundle",
                 "--no-plots"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["test_time_flip"] is True

    bundle = load_bundle(bundle_copy)  # still verifies: model.keras is untouched
    config = bundle.config
    assert config.test_time_flip is True and config.threshold == printed["best_threshold"]
    assert config.metrics["val"]["iou"] == printed["metrics_at_best_threshold"]["iou"]
    engine = SegmentationEngine(bundle.model, config, runtime="tensorflow")
    assert engine.test_time_flip
    assert config.metrics["val"]["iou"] == pytest.approx(direct_iou(engine, config.threshold), abs=1e-4)
    assert TEST_TIME_FLIP in (bundle_copy / "README.md").read_text()  # the card says so
    assert cv2.imread(str(bundle_copy / "threshold_sweep.png")) is not None

    # And back: the setting is recorded either way, the card no longer mentions it.
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--test-time-flip", "off", "--update-bundle",
                 "--no-plots"]) == 0
    assert load_bundle(bundle_copy).config.test_time_flip is False
    assert TEST_TIME_FLIP not in (bundle_copy / "README.md").read_text()


def test_update_bundle_refuses_anything_but_the_whole_val_split(bundle_copy, capsys):
    with pytest.raises(SystemExit):
        main([str(bundle_copy), "--data-dir", str(FIXTURES), "--split", "test", "--update-bundle"])
    assert "threshold is selected on val only" in capsys.readouterr().err


def test_what_if_settings_print_a_report_and_leave_the_bundle_as_it_was(bundle_copy, capsys):
    before = {path.name: path.read_bytes() for path in bundle_copy.iterdir()}
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--input-size", "48x64",
                 "--test-time-flip", "on"]) == 0
    output = capsys.readouterr().out
    printed = json.loads(output.strip().splitlines()[-1])
    assert printed["input_size"] == [48, 64] and printed["test_time_flip"] is True
    assert "fed at the scale of 48x64, photo and mirror image averaged" in output
    assert {path.name: path.read_bytes() for path in bundle_copy.iterdir()} == before

    config = load_bundle(bundle_copy).config
    config.input_size, config.test_time_flip = (48, 64), True
    engine = SegmentationEngine(load_bundle(bundle_copy).model, config, runtime="tensorflow")
    assert printed["metrics"]["iou"] == pytest.approx(direct_iou(engine, printed["threshold"]), abs=1e-4)


def fake_holdout_report(drive: str, ious: dict[float, float], input_size=(180, 240)) -> dict:
    """What `training.evaluate` writes for a held-out run's val split: here with a chosen IoU curve
    (fed at the tiny bundle's scale unless told otherwise)."""
    thresholds = sorted(ious)
    return {"split": "val", "images": 5, "threshold": 0.5, "input_size": list(input_size),
            "metrics_at_best_threshold": {"iou": max(ious.values())},
            "sweep": {"threshold": thresholds, "iou": [ious[t] for t in thresholds],
                      "dice": [0.6] * len(thresholds), "precision": [0.7] * len(thresholds),
                      "recall": [0.8] * len(thresholds)},
            "per_image_iou": {"all": {f"{drive}_0001": 0.5, f"{drive}_0002": 0.4}}}


def test_held_out_drives_choose_the_served_threshold_and_are_recorded(bundle_copy, tmp_path, capsys):
    # Drive A peaks at 0.3, drive B at 0.7; averaged, 0.3 wins (0.65 against 0.6 and 0.55).
    curves = {"0006R0": {0.3: 0.8, 0.5: 0.5, 0.7: 0.4}, "0001TP": {0.3: 0.5, 0.5: 0.6, 0.7: 0.7}}
    holdouts = []
    for drive, curve in curves.items():
        folder = tmp_path / f"holdout-{drive}"
        folder.mkdir()
        (folder / "evaluation_val.json").write_text(json.dumps(fake_holdout_report(drive, curve)))
        holdouts.append(str(folder))
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--held-out", *holdouts]) == 0
    config = json.loads((bundle_copy / "config.json").read_text())
    assert config["threshold"] == 0.3 and config["threshold_selected_on"] == "held-out drives 0001TP, 0006R0"
    assert config["metrics"]["held_out_drives"]["0006R0"]["iou"] == 0.8
    assert config["metrics"]["held_out_drives"]["0001TP"]["iou"] == 0.5
    assert config["metrics"]["held_out_drives"]["0001TP"]["iou_at_own_best_threshold"] == 0.7
    # val is recorded at the served threshold, not at its own best.
    assert config["metrics"]["val"]["threshold"] == 0.3
    bundle = load_bundle(bundle_copy)
    engine = SegmentationEngine(bundle.model, bundle.config, runtime="tensorflow")
    assert config["metrics"]["val"]["iou"] == pytest.approx(direct_iou(engine, 0.3), abs=1e-4)
    card = (bundle_copy / "README.md").read_text()
    assert "Results on streets it never saw" in card and "| 0006R0 | 5 | 0.8000 |" in card


def test_a_threshold_tie_serves_the_highest_threshold_near_the_held_out_best(bundle_copy, tmp_path, capsys):
    from training.feed_scales import main as feed_scales

    # Means: 0.3 -> 0.650 (best), 0.5 -> 0.648, 0.7 -> 0.600. Within 0.003 of the best, 0.5 is the highest.
    holdouts = write_holdout_reports(tmp_path, {"0006R0": {0.3: 0.80, 0.5: 0.796, 0.7: 0.70},
                                                "0001TP": {0.3: 0.50, 0.5: 0.50, 0.7: 0.50}})
    assert feed_scales([*holdouts, "--sizes", "180x240"]) == 0
    assert "| 180x240 | 0.30 | 0.5000 | 0.8000 |" in capsys.readouterr().out
    assert feed_scales([*holdouts, "--sizes", "180x240", "--threshold-tie", "0.003"]) == 0
    assert "| 180x240 | 0.50 | 0.5000 | 0.7960 |" in capsys.readouterr().out
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--no-plots",
                 "--held-out", *holdouts, "--threshold-tie", "0.003"]) == 0
    config = json.loads((bundle_copy / "config.json").read_text())
    assert config["threshold"] == 0.5 and config["metrics"]["held_out_drives"]["0006R0"]["iou"] == 0.796
    with pytest.raises(SystemExit):
        main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--threshold-tie", "0.003"])
    assert "use it with --held-out" in capsys.readouterr().err


def test_held_out_needs_update_bundle(bundle_copy, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(bundle_copy), "--data-dir", str(FIXTURES), "--held-out", str(tmp_path)])
    assert "--held-out chooses the threshold" in capsys.readouterr().err


def write_holdout_reports(tmp_path, curves: dict, input_size=None) -> list[str]:
    """Held-out run folders with evaluation_val.json, or the what-if report at `input_size`."""
    folders = []
    for drive, curve in curves.items():
        folder = tmp_path / f"holdout-{drive}"
        folder.mkdir(parents=True, exist_ok=True)
        if input_size is None:
            (folder / "evaluation_val.json").write_text(json.dumps(fake_holdout_report(drive, curve)))
        else:
            name = f"evaluation_val_at_{input_size[0]}x{input_size[1]}.json"
            (folder / name).write_text(json.dumps(fake_holdout_report(drive, curve, input_size)))
        folders.append(str(folder))
    return folders


def test_a_feed_scale_alone_as_what_if_keeps_its_report_under_its_own_name(bundle_copy, capsys):
    before = {path.name: path.read_bytes() for path in bundle_copy.iterdir()}
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--input-size", "48x64"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads((bundle_copy / "evaluation_val_at_48x64.json").read_text())
    assert written["input_size"] == [48, 64] and written["metrics"] == printed["metrics"]
    assert {path.name: path.read_bytes() for path in bundle_copy.iterdir() if path.name in before} == before


def test_feed_scale_is_chosen_on_held_out_drives_measured_at_that_scale(bundle_copy, tmp_path, capsys):
    # At the training scale 0.7 would win; fed at 48x64 the drives prefer 0.3 (0.65 against 0.6).
    holdouts = write_holdout_reports(tmp_path, {"0006R0": {0.3: 0.1, 0.7: 0.9}, "0001TP": {0.3: 0.1, 0.7: 0.9}})
    write_holdout_reports(tmp_path, {"0006R0": {0.3: 0.8, 0.7: 0.4}, "0001TP": {0.3: 0.5, 0.7: 0.8}}, (48, 64))
    gflops_before = json.loads((bundle_copy / "config.json").read_text()).get("gflops_per_image")
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--no-plots",
                 "--input-size", "48x64", "--held-out", *holdouts]) == 0
    bundle = load_bundle(bundle_copy)
    config = bundle.config
    assert config.input_size == (48, 64) and config.trained_input_size == (180, 240)
    assert config.input_size_selected_on == "held-out drives 0001TP, 0006R0" and config.threshold == 0.3
    assert config.metrics["held_out_drives"]["0006R0"]["iou"] == 0.8
    assert 0 < config.gflops_per_image != gflops_before
    # What the bundle records for val is what the engine now serves: fed at 48x64.
    engine = SegmentationEngine(bundle.model, config, runtime="tensorflow")
    assert config.metrics["val"]["iou"] == pytest.approx(direct_iou(engine, 0.3), abs=1e-4)
    card = (bundle_copy / "README.md").read_text()
    assert "about as many pixels as 48x64" in card and "not the training one (180x240)" in card


def test_feed_scale_is_not_chosen_on_val_nor_on_drives_measured_at_another_scale(bundle_copy, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--input-size", "48x64"])
    assert "choose it on held-out drives" in capsys.readouterr().err
    holdouts = write_holdout_reports(tmp_path, {"0006R0": {0.3: 0.8, 0.7: 0.4}})
    config_before = (bundle_copy / "config.json").read_bytes()
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--input-size", "48x64",
                 "--held-out", *holdouts]) == 1
    error = capsys.readouterr().err
    assert "no evaluation of its val split fed at 48x64" in error and "--input-size 48x64" in error
    assert (bundle_copy / "config.json").read_bytes() == config_before


def test_feed_scales_table_compares_sizes_on_the_drives_at_their_joint_threshold(tmp_path, capsys):
    from training.feed_scales import main as feed_scales

    holdouts = write_holdout_reports(tmp_path, {"0006R0": {0.3: 0.8, 0.7: 0.4}, "0001TP": {0.3: 0.5, 0.7: 0.7}})
    write_holdout_reports(tmp_path, {"0006R0": {0.3: 0.6, 0.7: 0.9}, "0001TP": {0.3: 0.5, 0.7: 0.6}}, (90, 120))
    assert feed_scales([*holdouts, "--sizes", "90x120", "180x240"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| 90x120 | 0.70 | 0.6000 | 0.9000 | 0.7500 (best) (chosen) | 0.25x |"
    assert lines[3] == "| 180x240 | 0.30 | 0.5000 | 0.8000 | 0.6500 | 1.00x |"
    # Within the tie, the cheaper scale is chosen although the larger one reads higher.
    assert feed_scales([*holdouts, "--sizes", "90x120", "180x240", "--tie", "0.05"]) == 0
    assert "0.7500 (best) (chosen)" in capsys.readouterr().out
    write_holdout_reports(tmp_path, {"0006R0": {0.3: 0.7, 0.7: 0.9}, "0001TP": {0.3: 0.5, 0.7: 0.58}}, (45, 60))
    assert feed_scales([*holdouts, "--sizes", "45x60", "90x120", "--tie", "0.02"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].endswith("| 0.7400 (chosen) | 0.25x |") and lines[3].endswith("| 0.7500 (best) | 1.00x |")
    assert feed_scales([*holdouts, "--sizes", "48x64"]) == 1
    assert "no evaluation of its val split fed at 48x64" in capsys.readouterr().err


def test_runs_held_out_of_the_same_drive_count_as_their_mean(bundle_copy, tmp_path, capsys):
    from training.feed_scales import main as feed_scales

    # Alone, seed 42 would choose 0.3 and seed 7 0.7; their mean on 0006R0 is 0.7 at 0.3 and 0.6 at 0.7,
    # so together the drives choose 0.7 (0.65 against 0.6), where 0006R0 reads 0.6, neither run's figure.
    seed_42 = write_holdout_reports(tmp_path / "seed42", {"0006R0": {0.3: 0.9, 0.7: 0.5}, "0001TP": {0.3: 0.5, 0.7: 0.7}})
    seed_7 = write_holdout_reports(tmp_path / "seed7", {"0006R0": {0.3: 0.5, 0.7: 0.7}, "0001TP": {0.3: 0.5, 0.7: 0.7}})
    assert feed_scales([*seed_42, *seed_7, "--sizes", "180x240"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| feed scale | threshold | 0001TP (2 runs) | 0006R0 (2 runs) |")
    assert lines[2] == "| 180x240 | 0.70 | 0.7000 | 0.6000 | 0.6500 (best) (chosen) | 1.00x |"
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--no-plots",
                 "--held-out", *seed_42, *seed_7]) == 0
    recorded = load_bundle(bundle_copy).config.held_out_drives
    assert recorded["0006R0"] == {"iou": 0.6, "dice": 0.6, "precision": 0.7, "recall": 0.8, "threshold": 0.7,
                                  "images": 5, "iou_at_own_best_threshold": 0.7, "runs": 2}
    assert "They are the mean of 2 training runs (other seeds) for each drive" in (bundle_copy / "README.md").read_text()
    # Runs evaluated on different frames of the drive are not averaged.
    report = fake_holdout_report("0006R0", {0.3: 0.5, 0.7: 0.7}) | {"images": 4}
    (Path(seed_7[0]) / "evaluation_val.json").write_text(json.dumps(report))
    assert feed_scales([*seed_42, *seed_7, "--sizes", "180x240"]) == 1
    assert "different numbers of frames (5, 4)" in capsys.readouterr().err


def test_a_held_out_report_of_another_drive_than_the_run_left_out_is_refused(bundle_copy, tiny_bundle_dir, tmp_path,
                                                                            capsys):
    from training.bundle import finishing_bundle

    holdout = tmp_path / "holdout-0006R0"
    with finishing_bundle(holdout, start_from=tiny_bundle_dir) as draft:
        draft.config.dataset.val_drives = ["0006R0"]
    # Its val report was overwritten by an evaluation on the real val split (drive 0016E5).
    (holdout / "evaluation_val.json").write_text(json.dumps(fake_holdout_report("0016E5", {0.3: 0.8, 0.7: 0.4})))
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--held-out", str(holdout)]) == 1
    assert "measures drive 0016E5, but" in capsys.readouterr().err
    (holdout / "evaluation_val.json").write_text(json.dumps(fake_holdout_report("0006R0", {0.3: 0.8, 0.7: 0.4})))
    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--update-bundle", "--no-plots",
                 "--held-out", str(holdout)]) == 0
    assert json.loads((bundle_copy / "config.json").read_text())["threshold"] == 0.3


def test_the_gallery_colours_found_wrong_and_missed_car_pixels_apart():
    from demo.engine import overlay_mask
    from training.evaluate import ERROR_COLOURS, error_overlay

    image = np.full((1, 4, 3), 100, np.uint8)
    predicted = np.array([[1, 1, 0, 0]], bool)  # found, marked wrongly, missed, background
    truth = np.array([[1, 0, 1, 0]], np.uint8)  # as binarize gives it
    coloured = error_overlay(image, predicted, truth)
    for column, colour in enumerate(ERROR_COLOURS.values()):
        tinted = overlay_mask(image[:, column:column + 1], np.ones((1, 1), bool), colour, opacity=0.6)
        assert (coloured[0, column] == tinted[0, 0]).all()
    assert (coloured[0, 3] == 100).all()  # neither car nor marked: untouched
    assert len({tuple(pixel) for pixel in coloured[0]}) == 4


def test_the_printed_summary_names_the_bundles_class(bundle_copy, capsys):
    config = json.loads((bundle_copy / "config.json").read_text())
    (bundle_copy / "config.json").write_text(json.dumps({**config, "target_class": {"id": 9, "name": "pedestrian"}}))

    assert main([str(bundle_copy), "--data-dir", str(FIXTURES), "--split", "val"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "val: 2 images, pedestrian pixels counted over the whole split"
