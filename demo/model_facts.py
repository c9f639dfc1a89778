"""The model in words: each fact its two descriptions give, phrased and computed once, from the bundle's
config.json. The page's "About the model" (`demo.page.describe_model`) and the Hub model card
(`training.model_card`) frame these sentences their own way; neither words a fact of its own.
"""
from __future__ import annotations

import re

from demo.bundle import BundleConfig, onnx_graph_weights
from demo.runtimes import ONNX_RUNTIME, RUNTIME_NAMES

SPLIT_NAMES = {"val": "the validation frames", "train": "the training frames"}
# How int8 graphs were quantised (`training.export_graphs --int8`).
INT8_CALIBRATION = "quantised after training with ranges measured on its training frames"
RUNTIME_IN_WORDS = {
    "litert": "LiteRT, with the weights stored at half precision (float16) and computed at full precision",
    "litert-float32": "LiteRT",
    "litert-int8": "LiteRT, with the weights stored as 8-bit integers",
    "tensorflow": "TensorFlow",
}
# ONNX Runtime serves the bundle's ONNX graph, which computes as its record says (`onnx_graph_weights`).
ONNX_GRAPH_IN_WORDS = {
    "float16": "ONNX Runtime, with the weights stored at half precision (float16) and computed at full precision",
    "float32": "ONNX Runtime",
    "int8": f"ONNX Runtime, computing in 8-bit integers (weights and activations, {INT8_CALIBRATION})",
}
TEST_TIME_FLIP = "Each photo is also run mirrored, and the two answers averaged"
# What a held-out drive's figures are.
HELD_OUT_RECIPE = "by the same recipe trained without it"
# Plurals that English does not form by its rules (`plural`).
IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children",
                     "foot": "feet", "mouse": "mice", "sheep": "sheep", "deer": "deer", "fish": "fish"}
# The class whose bundles name their API's region count `car_regions`, as the app always has; every
# other class's is `regions`, whatever its name (`regions_key`).
CAR = "car"


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def plural(noun: str) -> str:
    """The plural of a noun, or of a phrase's last word ("traffic light" -> "traffic lights"), by simple
    English rules: "person" -> "people", "bus" -> "buses", "lorry" -> "lorries", else "+s"."""
    head, _, last = noun.rpartition(" ")
    lower = last.lower()
    if lower in IRREGULAR_PLURALS:
        word = last[:1] + IRREGULAR_PLURALS[lower][1:]
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def class_words(config: BundleConfig) -> tuple[str, str]:
    """The class the bundle segments, in words: (singular, plural), e.g. ("car", "cars"); the underscores of
    CamVid's names read as spaces ("sign_symbol" -> ("sign symbol", "sign symbols"))."""
    singular = " ".join(config.target_class.name.replace("_", " ").split())
    return singular, plural(singular)


def class_slug(words: str, joiner: str = "_") -> str:
    """The class's words as a file-name or tag part: "sign symbols" -> "sign_symbols" ("sign-symbols" with
    `joiner="-"`); "class" when nothing of them is a plain letter or digit."""
    return joiner.join(re.findall(r"[a-z0-9]+", words.lower())) or "class"


def regions_key_for(singular: str) -> str:
    """The API's name for the number of regions found of the class `singular`: `car_regions` for cars, as
    clients of the car app read it, and `regions` for any other class (a key that names no class, valid
    JSON for any name, the same for every class but car)."""
    return f"{CAR}_regions" if singular.lower() == CAR else "regions"


def pretrained_weights(training: dict) -> str | None:
    """Where the encoder's starting weights came from, in words; None when it started from random ones."""
    if training.get("imagenet_weights_used"):
        return "weights learnt on ImageNet photos"
    if training.get("encoder_weights") == "hed":
        return "HED's VGG16 weights (learnt on ImageNet photos, then fine-tuned to find edges)"
    return None


def describe_architecture(config: BundleConfig) -> str:
    """The bundle's architecture in words ("a U-Net (1.9 million weights)"), with its starting weights."""
    architecture = config.architecture
    encoder = re.fullmatch(r"efficientnet-lite(\d)-unet(-lean)?", architecture)
    if encoder:
        what = f"a U-Net on an EfficientNet-Lite{encoder[1]} encoder"
    elif architecture == "unet":
        what = "a U-Net"
    else:
        what = f"a `{architecture}` network"
    if config.parameters:
        what += f" ({config.parameters / 1e6:.1f} million weights)"
    pretrained = pretrained_weights(config.training)
    if pretrained:
        what += f", starting from {pretrained}"
    return what


def what_it_is(config: BundleConfig) -> str:
    """What the model is and does, in a sentence or two."""
    singular, _ = class_words(config)
    text = (f"{capitalised(describe_architecture(config))}: a network that gives every pixel a probability of being "
            f"{singular}; the pixels at or above the threshold are marked.")
    if config.test_time_flip:
        text += f" {TEST_TIME_FLIP}."
    return text


def learnt_from_camvid(config: BundleConfig) -> bool:
    """Whether the bundle names CamVid as what it learnt from (training's CamVid layouts do; --dataset-name
    "CamVid ..." for frames converted from it): only then do the page and card speak of Cambridge's streets."""
    return (config.dataset.name or "").startswith("CamVid")


def dataset_in_words(config: BundleConfig) -> str:
    """What the model learnt from ("CamVid (SegNet layout): frames of videos filmed ...")."""
    name = config.dataset.name or "An unnamed dataset"
    commit = config.dataset.extra.get("commit")  # a Hub dataset repo (training.hub_data): the commit read
    if commit:
        name = f"{name} at commit {commit}"
    if not learnt_from_camvid(config):
        return f"{name}: images with {class_words(config)[0]} masks, as its trainer gave them"
    return (f"{name}: frames of videos filmed from a car driving through "
            "Cambridge (UK), every pixel labelled by people")


def network_in_words(config: BundleConfig) -> str:
    """The network, as the page's first line introduces it."""
    if learnt_from_camvid(config):
        return "a network trained on street videos from Cambridge (UK)"
    return f"a network trained on {config.dataset.name or 'its own images'}"


def threshold_chosen_on(config: BundleConfig) -> str:
    """Where the bundle's threshold was chosen, in words ("the validation frames")."""
    split = config.threshold_selected_on or config.dataset.selection_split or "val"
    return SPLIT_NAMES.get(split, split)


def threshold_in_words(config: BundleConfig) -> str:
    return f"The default threshold, {float(config.threshold):.2f}, was chosen on {threshold_chosen_on(config)}."


def held_out_scores(config: BundleConfig) -> list[tuple[str, dict]]:
    """(drive, metrics) for each drive held out of training: the same recipe trained without that drive,
    measured on it, which is what to expect on a photo of a new street."""
    return sorted(config.held_out_drives.items())


def runs_in_words(runs: int) -> str | None:
    """"the mean of 2 training runs" when figures average several runs of the recipe; else None."""
    return f"the mean of {runs} training runs" if runs > 1 else None


def validation_frames_in_words(config: BundleConfig) -> str:
    """Whether the validation frames' drives were trained on, and so how far their figures carry."""
    if validation_drives_unseen(config):
        return f"the validation frames come from drives training never saw ({', '.join(config.dataset.val_drives)})"
    return ("the validation frames come from a drive whose other frames were trained on, so expect less on "
            "photos from elsewhere")


def validation_drives_unseen(config: BundleConfig) -> bool:
    """Whether the bundle records its splits' drives, and no validation drive was trained on."""
    val_drives, train_drives = config.dataset.val_drives, config.dataset.train_drives
    return val_drives is not None and train_drives is not None and not set(val_drives) & set(train_drives)


def runtime_in_words(config: BundleConfig, runtime: str) -> str:
    """What computes the model under `runtime` (a `MODEL_RUNTIME` value), and in what arithmetic."""
    words = (ONNX_GRAPH_IN_WORDS.get(onnx_graph_weights(config)) if runtime == ONNX_RUNTIME
             else RUNTIME_IN_WORDS.get(runtime))
    return words or RUNTIME_NAMES.get(runtime, runtime)


def encoder_training(training: dict) -> str:
    """How a pretrained encoder was fine-tuned (after frozen epochs), and any BatchNorm statistics recomputed."""
    text = "" if pretrained_weights(training) else "No pretrained (ImageNet) weights."
    if training.get("frozen_epochs"):
        rate = training.get("fine_tune_learning_rate", "?")
        encoder_rate = training.get("encoder_learning_rate", rate)
        text += (f" The decoder trained alone for {training['frozen_epochs']} epochs, then everything at {rate}"
                 + (f" (the encoder at {encoder_rate})" if encoder_rate != rate else "")
                 + ", the encoder's BatchNorm statistics kept.")
    recomputed = training.get("batchnorm_statistics_recomputed")
    if recomputed:
        height, width = recomputed["size"]
        text += (f" After training, the statistics of its {recomputed['layers']} trained BatchNorm layers were"
                 f" recomputed on the {recomputed['frames']} training frames, un-augmented, at {height}x{width}"
                 " (a step of earlier versions of this project).")
    return text.strip()


def training_in_words(config: BundleConfig) -> str:
    """How the model was trained: the command's settings, at what scale, for how long, and what was kept."""
    training = config.training
    if not training:
        return "config.json records no training details for this model."
    trained_h, trained_w = config.trained_input_size
    return (
        f"`python -m training.train` with architecture `{config.architecture}`, frames resized to "
        f"{trained_h}x{trained_w}"
        + (f", random {training['crop_size'][0]}x{training['crop_size'][1]} crops" if training.get("augment") else "")
        + f"; loss `{training.get('loss', '?')}`, Adam at {training.get('learning_rate', '?')}"
        + f" ({training.get('schedule', '?')} schedule), batch {training.get('batch_size', '?')}, "
        f"{training.get('epochs_run', '?')} epochs (best val IoU at epoch {training.get('best_epoch', '?')}), "
        f"{'with' if training.get('augment') else 'without'} augmentation, "
        f"{training.get('wall_time_s', 0) / 60:.0f} min on {training.get('hardware', 'a 2-core CPU')}. "
        + ("It continued from the weights of an earlier run of this project (`--init-from`), with a new "
           "learning-rate cycle. " if training.get("init_from") else "")
        + encoder_training(training)
        + (" The last epoch was kept (a schedule fixed in advance, not picked on val)."
           if training.get("keep") == "last" else " The checkpoint with the best val IoU was kept.")
    )


def feeding_in_words(config: BundleConfig) -> str:
    """How to feed the network a photo, at which scale its figures were measured, and through what."""
    input_h, input_w = config.input_size
    trained_h, trained_w = config.trained_input_size
    return (
        f"Feed it images resized to exactly {input_h}x{input_w}."
        if config.fixed_input else
        f"It is fully convolutional: resize a photo (aspect kept) to about as many pixels as "
        f"{input_h}x{input_w} and pad height and width to multiples of {config.stride}."
    ) + (f" That scale is not the training one ({trained_h}x{trained_w}): it was chosen on "
         f"{config.input_size_selected_on}, and every figure here was measured at it."
         if config.input_size_selected_on else ""
    ) + (" Every figure here includes the mirrored run (config.json: `\"test_time_flip\": true`)."
         if config.test_time_flip else ""
    ) + (" The figures above were measured through the int8 ONNX graph below, which is what the app serves: "
         "`model.keras` computes in float and answers a little differently, so measure it before relying on "
         "them for it." if onnx_graph_weights(config) == "int8" else "")
