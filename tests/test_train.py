"""The training command end to end on the shipped CamVid pairs: bundle, resume, faults, strategy."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from demo.bundle_files import read_config, verify_bundle
from demo.graphs import load_keras_model
from demo.loading import DEFAULT_BUNDLE_DIR, load_bundle
from demo.engine import SegmentationEngine
from helpers import plain_folder
from training import train
from training.config import TrainingConfig
from training.holdout import write_holdout_split

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["--architecture", "unet", "--base-filters", "4", "--input-size", "96x128", "--batch-size", "2",
            "--limit", "2", "--verbose", "0"]


def run_training(camvid_dir, output_dir, *extra):
    return train.main(["--data-dir", str(camvid_dir), "--output-dir", str(output_dir), *TINY_RUN, *extra])


def log_rows(output_dir):
    with open(output_dir / "run" / "log.csv") as handle:
        return list(csv.DictReader(handle))


def test_one_epoch_writes_a_bundle_that_reloads_in_safe_mode(camvid_dir, tmp_path):
    assert run_training(camvid_dir, tmp_path, "--epochs", "1") == 0
    bundle_dir = tmp_path / "bundle"
    config = verify_bundle(bundle_dir)
    assert {"model.keras", "config.json", "README.md", "training_curves.png", "threshold_sweep.png",
            "evaluation_val.json", "gallery_val.png"} <= {path.name for path in bundle_dir.iterdir()}
    assert not [path for path in tmp_path.iterdir() if ".tmp-" in path.name]
    assert config.input_size == (96, 128) and config.resize == "keep_aspect"
    assert config.metrics["val"]["images"] == 2
    assert 0.0 <= config.metrics["val"]["iou"] <= 1.0
    assert "data_dir" not in config.training  # no local paths in what gets published
    bundle = load_bundle(bundle_dir)
    probabilities = SegmentationEngine(bundle.model, bundle.config).predict_probabilities(
        np.zeros((359, 481, 3), np.uint8))
    assert probabilities.shape == (359, 481)
    assert "library_name: keras" in (bundle_dir / "README.md").read_text()


def test_resume_continues_where_the_run_stopped(camvid_dir, tmp_path):
    assert run_training(camvid_dir, tmp_path, "--epochs", "1") == 0
    first_state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert first_state["epoch"] == 1
    assert run_training(camvid_dir, tmp_path, "--epochs", "3", "--resume") == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 3
    assert [row["epoch"] for row in log_rows(tmp_path)] == ["0", "1", "2"]
    assert json.loads((tmp_path / "bundle" / "config.json").read_text())["training"]["epochs_run"] == 3


def test_init_from_starts_where_the_given_bundle_ended_and_records_its_hash(camvid_dir, tmp_path):
    import keras

    first, second = tmp_path / "first", tmp_path / "second"
    assert run_training(camvid_dir, first, "--epochs", "1") == 0
    # A learning rate too small to move any weight: the second run's trained weights are the first's.
    assert run_training(camvid_dir, second, "--epochs", "1", "--init-from", str(first / "bundle"),
                        "--learning-rate", "1e-12", "--schedule", "constant") == 0

    def trainable(bundle_dir):
        return [weight.numpy() for weight in
                keras.saving.load_model(bundle_dir / "model.keras", safe_mode=True).trainable_weights]

    for before, after in zip(trainable(first / "bundle"), trainable(second / "bundle"), strict=True):
        np.testing.assert_allclose(after, before, atol=1e-6)
    training_record = json.loads((second / "bundle" / "config.json").read_text())["training"]
    first_config = json.loads((first / "bundle" / "config.json").read_text())
    assert training_record["init_from"] == "bundle"
    assert training_record["init_from_sha256"] == first_config["model_sha256"]


def test_training_killed_mid_epoch_resumes_and_finishes(camvid_dir, tmp_path):
    """SIGKILL in the middle of epoch 2, then --resume: epochs 2 and 3 run, the bundle is whole."""
    command = [sys.executable, "-m", "training.train", "--data-dir", str(camvid_dir), "--output-dir", str(tmp_path),
               *TINY_RUN, "--epochs", "3", "--steps-per-epoch", "150"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / "run" / "state.json"
    deadline = time.monotonic() + 300
    while not state_file.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert state_file.exists(), "the first epoch did not finish within 5 minutes (is the machine starved?)"
    time.sleep(1.0)  # well inside epoch 2 (an epoch of 150 steps takes several seconds)
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads(state_file.read_text())["epoch"] == 1
    assert not (tmp_path / "bundle").exists()
    assert run_training(camvid_dir, tmp_path, "--epochs", "3", "--steps-per-epoch", "150", "--resume") == 0
    assert [row["epoch"] for row in log_rows(tmp_path)] == ["0", "1", "2"]
    verify_bundle(tmp_path / "bundle")


def test_a_crash_before_the_threshold_is_recorded_publishes_no_bundle_and_resume_finishes(camvid_dir, tmp_path,
                                                                                         monkeypatch):
    """The bundle appears once, complete: model.keras is saved and verifies long before the evaluation
    chooses its threshold, and a crash in between must not leave it at OUTPUT_DIR/bundle serving 0.5."""
    import training.evaluate

    def crash(*args, **kwargs):
        raise RuntimeError("killed while recording the threshold")

    monkeypatch.setattr(training.evaluate, "record_serving_settings", crash)
    with pytest.raises(RuntimeError, match="killed while recording"):
        run_training(camvid_dir, tmp_path, "--epochs", "1")
    assert not (tmp_path / "bundle").exists()
    assert not [path for path in tmp_path.iterdir() if ".tmp-" in path.name]  # the staging folder is gone too
    # The same command with --resume trains nothing more and writes the bundle from the checkpoints.
    monkeypatch.undo()
    assert run_training(camvid_dir, tmp_path, "--epochs", "1", "--resume") == 0
    assert [row["epoch"] for row in log_rows(tmp_path)] == ["0"]
    assert verify_bundle(tmp_path / "bundle").threshold_selected_on == "val"


def test_disk_full_is_a_clear_error_and_keeps_earlier_checkpoints(camvid_dir, tmp_path, monkeypatch, capsys):
    import keras

    assert run_training(camvid_dir, tmp_path, "--epochs", "1") == 0
    best_before = (tmp_path / "run" / "best.keras").read_bytes()

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", disk_full)
    assert run_training(camvid_dir, tmp_path, "--epochs", "2", "--resume") == 3
    error = capsys.readouterr().err
    assert "No space left on device" in error and "intact" in error and "Traceback" not in error
    assert (tmp_path / "run" / "best.keras").read_bytes() == best_before
    assert json.loads((tmp_path / "run" / "state.json").read_text())["epoch"] == 1


def test_read_only_output_folder_is_a_clear_error(camvid_dir, tmp_path, capsys):
    target = tmp_path / "out"
    target.write_text("a file where the output folder should be")
    assert run_training(camvid_dir, target, "--epochs", "1") == 3
    assert "could not write to" in capsys.readouterr().err


def test_a_held_out_folder_chooses_nothing_on_the_drive_under_test(camvid_dir, tmp_path, capsys):
    folder = tmp_path / "without-0006R0"
    write_holdout_split(camvid_dir, "0006R0", folder)  # val: 0006R0 alone, a drive training never sees
    # --patience 0 ends any other run after its first epoch (as the plain folder shows below).
    assert run_training(folder, tmp_path / "held-out", "--epochs", "2", "--patience", "0") == 0
    assert "val holds only 0006R0, which training never sees: early stopping is off" in capsys.readouterr().out
    assert len(log_rows(tmp_path / "held-out")) == 2
    recorded = verify_bundle(tmp_path / "held-out" / "bundle").training
    assert (recorded["keep"], recorded["patience"], recorded["kept_epoch"]) == ("last", None, 2)

    with pytest.raises(SystemExit, match="--keep best would choose the epoch on it"):
        run_training(folder, tmp_path / "best", "--epochs", "1", "--keep", "best")
    assert not (tmp_path / "best").exists()

    # CamVid's own val shares its drive with training: the flags stand, best epoch by default.
    assert run_training(camvid_dir, tmp_path / "plain", "--epochs", "2", "--patience", "0") == 0
    assert len(log_rows(tmp_path / "plain")) == 1
    assert verify_bundle(tmp_path / "plain" / "bundle").training["keep"] == "best"


def test_bad_data_stops_before_training_and_names_the_file(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    (tmp_path / "train" / "a.png").write_bytes(b"")
    assert run_training(tmp_path, tmp_path / "out", "--epochs", "1") == 2
    assert "train/a.png has no label map" in capsys.readouterr().err


def test_own_images_and_masks_train_a_bundle_of_their_class(camvid_dir, tmp_path, capsys):
    # Pedestrians (CamVid's class 9) as 0/255 masks in images/ and masks/: val is the 0016E5 group, which
    # training never sees, so the run keeps its last epoch as on a held-out drive.
    folder = plain_folder(camvid_dir, tmp_path / "people", mask=lambda labels: np.where(labels == 9, 255, 0))
    assert run_training(folder, tmp_path / "out", "--epochs", "1", "--class-name", "pedestrian") == 0
    assert "val holds only 0016E5, which training never sees" in capsys.readouterr().out
    config = verify_bundle(tmp_path / "out" / "bundle")
    assert (config.target_class.id, config.target_class.name) == (255, "pedestrian")
    assert (config.dataset.name, config.dataset.train_drives, config.dataset.val_drives) == (
        "people (images/ and masks/)", ["0001TP", "0006R0"], ["0016E5"])
    assert config.training["keep"] == "last" and config.training["group_pattern"] == "^([^_]+)_"
    assert config.metrics["val"]["images"] == 2  # --limit 2 of the group's four frames

    # A finished run resumed rewrites its bundle without training more: here to name what it learnt from.
    rows = log_rows(tmp_path / "out")
    assert run_training(folder, tmp_path / "out", "--epochs", "1", "--class-name", "pedestrian", "--resume",
                        "--dataset-name", "CamVid pedestrians") == 0
    assert log_rows(tmp_path / "out") == rows
    renamed = verify_bundle(tmp_path / "out" / "bundle")
    assert renamed.dataset.name == "CamVid pedestrians" and "dataset_name" not in renamed.training


def test_own_folder_needs_a_class_name_and_bad_masks_stop_before_any_model(camvid_dir, tmp_path, capsys):
    folder = plain_folder(camvid_dir, tmp_path / "data", mask=lambda labels: np.zeros_like(labels))
    with pytest.raises(SystemExit, match="say what the masks mark with --class-name NAME"):
        run_training(folder, tmp_path / "out", "--epochs", "1")
    assert run_training(folder, tmp_path / "out", "--epochs", "1", "--class-name", "dog") == 2
    assert "error: No mask in" in capsys.readouterr().err
    assert not (tmp_path / "out" / "run").exists()  # stopped before anything was built or written


def test_fewer_training_frames_than_a_batch_is_a_clear_error(camvid_dir, tmp_path, capsys):
    folder = plain_folder(camvid_dir, tmp_path / "data")  # two training frames: 0001TP's and 0006R0's
    assert run_training(folder, tmp_path / "out", "--epochs", "1", "--class-name", "car", "--batch-size", "8") == 2
    assert "error: training has 2 frames, fewer than --batch-size 8" in capsys.readouterr().err


def test_target_class_takes_a_camvid_name_and_names_the_bundle_by_it(camvid_dir):
    config = train.parse_args(["--output-dir", "x", "--data-dir", str(camvid_dir), "--target-class", "pedestrian"])
    assert config.target_class == 9
    assert (train.settle_target(config).target_class, train.settle_target(config).class_name) == (9, "pedestrian")
    car = train.settle_target(train.parse_args(["--output-dir", "x", "--data-dir", str(camvid_dir)]))
    assert (car.target_class, car.class_name) == (8, "car")  # the default is today's car bundle
    with pytest.raises(SystemExit):
        train.parse_args(["--output-dir", "x", "--target-class", "pedestrians"])
    with pytest.raises(SystemExit, match="--target-class 12 is no CamVid class"):
        train.settle_target(train.parse_args(["--output-dir", "x", "--data-dir", str(camvid_dir),
                                              "--target-class", "12"]))


def test_seed_recipe_is_the_reference_setup():
    args = train.parse_args(["--output-dir", "x", "--recipe", "seed"])
    assert (args.architecture, args.input_size, args.loss, args.learning_rate, args.batch_size, args.epochs,
            args.schedule, args.augment, args.freeze_encoder) == (
        "vgg16-unet", (224, 224), "bce", 1e-3, 2, 20, "constant", False, True)
    explicit = train.parse_args(["--output-dir", "x", "--recipe", "seed", "--epochs", "3", "--encoder-weights", "none"])
    assert explicit.epochs == 3 and not explicit.freeze_encoder


def test_shipped_recipe_is_what_the_default_model_recorded():
    recorded = read_config(DEFAULT_BUNDLE_DIR).training
    config = train.parse_args(["--output-dir", "x", "--recipe", "shipped"])
    for name in ("architecture", "frozen_epochs", "learning_rate", "fine_tune_learning_rate", "encoder_learning_rate",
                 "loss", "photometric", "epochs", "batch_size", "keep", "seed"):
        assert getattr(config, name) == recorded[name], name
    assert config.input_size == tuple(recorded["input_size"])
    # Flags still win, and a smaller frame gets its own crop, not the 432x576 run's.
    probe = train.parse_args(["--output-dir", "x", "--recipe", "shipped", "--photometric", "basic",
                              "--input-size", "240x320"])
    assert (probe.photometric, probe.input_size, probe.crop_size) == ("basic", (240, 320), None)


def test_shipped_recipe_keeps_a_crop_size_that_was_asked_for(tmp_path):
    recorded = json.loads((DEFAULT_BUNDLE_DIR / "config.json").read_text())
    recorded["training"].update(crop_size=[256, 256], init_from="other_bundle", limit=4)
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    recipe = train.shipped_recipe(tmp_path)
    assert recipe["crop_size"] == (256, 256) and "init_from" not in recipe and "limit" not in recipe


@pytest.mark.parametrize("removed, named", [
    ({"ema": 0.99}, "ema=0.99"),
    ({"recompute_batchnorm": True}, "recompute_batchnorm=True"),
    ({"min_zoom": 0.5}, "min_zoom=0.5"),
    ({"max_zoom": 2.0}, "max_zoom=2.0"),
    ({"photometric": "basic", "max_zoom": 1.5}, "max_zoom=1.5"),  # 1.5 is strong's range, not basic's
    ({"copy_paste": 0.5}, "copy_paste=0.5"),
    ({"class_auxiliary": 0.5}, "class_auxiliary=0.5"),
    ({"architecture": "efficientnet-lite1-unet-lean"}, "architecture=efficientnet-lite1-unet-lean"),
    ({"loss": "bce+lovasz"}, "loss=bce+lovasz"),
])
def test_shipped_recipe_refuses_a_bundle_trained_with_a_removed_option(tmp_path, removed, named):
    recorded = json.loads((DEFAULT_BUNDLE_DIR / "config.json").read_text())
    assert recorded["training"]["ema"] is None  # recorded as off: read as today's recipe (the test above)
    recorded["training"].update(removed)
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(SystemExit, match=rf"trained with {re.escape(named)}: options this command no longer has"):
        train.shipped_recipe(tmp_path)


def test_shipped_recipe_reads_removed_options_recorded_at_what_meant_off(tmp_path):
    recorded = json.loads((DEFAULT_BUNDLE_DIR / "config.json").read_text())
    off = {"ema": None, "recompute_batchnorm": False, "min_zoom": 0.75, "max_zoom": 1.5,  # 1.5: strong photometric
           "copy_paste": 0.0, "class_auxiliary": 0.0}
    recorded["training"].update(off)
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert train.shipped_recipe(tmp_path) == train.shipped_recipe()


def test_mirrored_strategy_on_two_logical_cpus(camvid_dir, tmp_path):
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from training import train
from training.config import TrainingConfig
import sys
sys.exit(train.main({["--data-dir", str(camvid_dir), "--output-dir", str(tmp_path), *TINY_RUN,
                      "--epochs", "1", "--strategy", "mirrored"]!r}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "strategy: MirroredStrategy, 2 replicas on /job:localhost/replica:0/task:0/device:CPU:0, " \
           "/job:localhost/replica:0/task:0/device:CPU:1" in result.stdout
    verify_bundle(tmp_path / "bundle")


def test_pretrained_encoder_trains_frozen_then_fine_tuned_and_keeps_the_last_epoch(camvid_dir, tmp_path):
    import keras

    from training.models import ENCODER_LAYER

    arguments = ["--data-dir", str(camvid_dir), "--output-dir", str(tmp_path), "--architecture",
                 "efficientnet-lite0-unet", "--encoder-weights", "none", "--input-size", "64x96", "--batch-size", "2",
                 "--limit", "2", "--verbose", "0", "--epochs", "2", "--frozen-epochs", "1", "--keep", "last",
                 "--photometric", "strong", "--fine-tune-learning-rate", "1e-3", "--encoder-learning-rate", "1e-4"]
    assert train.main(arguments) == 0
    last = keras.saving.load_model(tmp_path / "run" / "last.keras")  # with its optimizer, as --resume loads it
    encoder = last.get_layer(ENCODER_LAYER)
    assert encoder.get_layer("block0_depthwise_conv").trainable  # unfrozen for the second epoch
    assert not encoder.get_layer("block0_depthwise_bn").trainable  # its statistics never train
    # Fine-tuning stepped the encoder at a tenth of the decoder's rate.
    assert last.optimizer.encoder_rate_factor == pytest.approx(0.1)
    assert set(last.optimizer.encoder_variables) == {variable.path for variable in encoder.trainable_variables}
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())["training"]
    assert config["frozen_epochs"] == 1 and config["photometric"] == "strong" and config["keep"] == "last"
    assert config["encoder_learning_rate"] == pytest.approx(1e-4)
    assert config["kept_epoch"] == 2 and config["epochs_run"] == 2
    # The bundle holds the last epoch's weights, whichever epoch validated best.
    bundled = load_keras_model(tmp_path / "bundle")  # load_bundle serves its graphs, not the Keras model
    for kept, shipped in zip(last.weights, bundled.weights, strict=True):
        np.testing.assert_array_equal(kept.numpy(), shipped.numpy())


def test_frozen_epochs_need_a_pretrained_encoder(camvid_dir, tmp_path):
    with pytest.raises(SystemExit, match="no pretrained encoder"):
        run_training(camvid_dir, tmp_path, "--epochs", "2", "--frozen-epochs", "1")


def test_every_training_flag_is_a_typed_config_field():
    # A flag the parser gains but the config lacks would be parsed and silently ignored.
    dests = {action.dest for action in train.build_parser()._actions} - {"help"}
    assert dests == {field.name for field in dataclasses.fields(TrainingConfig)}


def test_training_config_is_frozen_and_records_no_local_paths():
    config = train.parse_args(["--output-dir", "out", "--architecture", "unet", "--data-dir", "/data/camvid",
                               "--init-from", "/home/me/runs/a/bundle"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    recorded = config.recorded(pretrained_encoder=False)
    assert {"data_dir", "output_dir", "resume", "verbose", "encoder_weights", "frozen_epochs"}.isdisjoint(recorded)
    assert recorded["init_from"] == "bundle" and recorded["input_size"] == config.input_size
    assert "frozen_epochs" in train.parse_args(["--output-dir", "out", "--architecture", "efficientnet-lite0-unet"]
                                               ).recorded(pretrained_encoder=True)


def test_resolve_fills_per_architecture_defaults_and_keeps_explicit_flags():
    lite = train.parse_args(["--output-dir", "x", "--architecture", "efficientnet-lite0-unet", "--learning-rate", "1e-3"])
    assert lite.resize == "keep_aspect" and lite.fine_tune_learning_rate == pytest.approx(2e-4)
    assert lite.encoder_learning_rate == pytest.approx(2e-4)  # one rate unless asked for two
    explicit = train.parse_args(["--output-dir", "x", "--architecture", "efficientnet-lite0-unet",
                                 "--fine-tune-learning-rate", "5e-5", "--input-size", "336x448"])
    assert (explicit.fine_tune_learning_rate, explicit.input_size) == (5e-5, (336, 448))
    assert train.parse_args(["--output-dir", "x", "--architecture", "vgg16-unet"]).resize == "stretch"


def test_time_steps_times_optimizer_steps_and_projects_an_epoch(camvid_dir, capsys):
    from training import time_steps

    assert time_steps.main(["--data-dir", str(camvid_dir), "--architecture", "unet", "--input-size", "64x96",
                            "--batch-size", "2", "--steps", "3"]) == 0
    # Four training frames at batch 2: an epoch is two steps.
    assert re.search(r"median step \d+\.\d\d s over 3 steps; one epoch of 2 steps projected",
                     capsys.readouterr().out)
