"""The model card (the bundle's README.md), generated from its config.json."""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from demo.bundle import CARD_FILE, BundleConfig, onnx_graph_weights
from demo.bundle_files import atomic_write_text, read_config
from demo.runtimes import ARITHMETIC_NAMES, LITERT, RUNTIME_FAMILIES

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

Binary semantic segmentation of **{{ class_name }}s** in street photos: for every pixel, the
probability that it belongs to a {{ class_name }}. A `{{ architecture }}` Keras model{{ size_text }}
trained on CamVid. Served by the car-segmentation Gradio app; this folder is a complete *model bundle*.

{% if held_out %}## Results on streets it never saw

The same recipe trained without one CamVid drive, then measured on that drive (`training.holdout`):
what to expect on a photo of a new street. The threshold ({{ threshold }}) was chosen on these drives.

| held-out drive | frames | IoU | Dice | precision | recall |
|---|---|---|---|---|---|
{% for drive, m in held_out %}| {{ drive }} | {{ m.images }} | {{ "%.4f"|format(m.iou) }} | {{ "%.4f"|format(m.dice) }} | {{ "%.4f"|format(m.precision) }} | {{ "%.4f"|format(m.recall) }} |
{% endfor %}
{% if held_out_runs > 1 %}
Each drive's figures are the mean of {{ held_out_runs }} runs of the recipe without it (other seeds): one
run's figure moves by a few hundredths from seed to seed.
{% endif %}{% endif %}## Results on CamVid val ({{ val_images }} frames, pixel counts summed over the split)

| metric | value |
|---|---|
{% for name, value in metrics %}| {{ name }} | {{ value }} |
{% endfor %}
Threshold sweep: `threshold_sweep.png`; training curves: `training_curves.png`.

## How it was trained

{{ training_text }}

## How to use it

```python
{% if repo_id -%}
import json, keras, huggingface_hub
folder = huggingface_hub.snapshot_download("{{ repo_id }}")     # pin revision="<commit sha>" in production
model = keras.saving.load_model(f"{folder}/model.keras", safe_mode=True)   # input: RGB 0..255, (batch, H, W, 3)
config = json.load(open(f"{folder}/config.json"))                          # input size, threshold, metrics
{%- else -%}
import json, keras
model = keras.saving.load_model("model.keras", safe_mode=True)   # input: RGB 0..255, (batch, H, W, 3)
config = json.load(open("config.json"))                           # input size, threshold, metrics
{%- endif %}
```
{{ feeding_text }} The output is `(batch, H, W, 1)` car probabilities; car where it is at least
`config["threshold"]` ({{ threshold }}). The Gradio app in this repository does all of this
(`demo.engine.SegmentationEngine`), including EXIF orientation and any image size.
{% if graphs %}
## Serving graphs

What the app runs, converted from `model.keras`, so serving needs neither TensorFlow nor Keras:
the ONNX graph with ONNX Runtime, the faster; else the LiteRT graphs. The runtime column says how each
computes: float16 weights with float32 arithmetic, or int8 weights and activations (`training.export_graphs
--int8`, ranges calibrated on training frames). Each records the SHA-256 of the `model.keras` it came
from; `config.json` (`serving_graphs`) records each file's.

| file | runtime | input | size | SHA-256 | largest difference from model.keras (probe image) |
|---|---|---|---|---|---|
{% for name, entry in graphs %}| `{{ name }}` | {{ entry.runtime_text }} | {{ entry.input_text }} | {{ entry.size_text }} | `{{ entry.sha256[:16] }}...` | {{ entry.max_difference_from_keras }} |
{% endfor %}
Regenerate them after any change to `model.keras`: `python -m training.export_graphs BUNDLE_DIR`
(with `--int8 DATA_DIR` for an int8 ONNX graph).
{% endif %}
## Limitations

CamVid was filmed in Cambridge (UK), in daylight, in 2007 and 2008, from a car's dashboard: 367
training frames from three drives. Expect worse results at night, in rain or snow, on other
continents' cars and streets, from other viewpoints (aerial, pedestrian, close-ups) and on cars
much smaller or larger in the frame than in CamVid. CamVid's labels mark vans and buses as car
too, and its training frames show few of them from behind, most on one drive: trained without that
drive, this recipe missed most of them, so expect misses on large vehicles ahead. The validation
frames come from the same street as most training frames, so the val figures above flatter the
model. Not for any safety-related use.

## Dataset and citation

CamVid as prepared for SegNet (480x360, 11 classes + unlabelled; class 8 = car), for personal and
research use (CC BY-NC 4.0 as stated by its distributors).

```bibtex
@article{brostow2009camvid,
  title   = {Semantic object classes in video: A high-definition ground truth database},
  author  = {Brostow, Gabriel J. and Fauqueur, Julien and Cipolla, Roberto},
  journal = {Pattern Recognition Letters}, volume = {30}, number = {2}, pages = {88--97}, year = {2009}
}
@article{badrinarayanan2017segnet,
  title   = {SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation},
  author  = {Badrinarayanan, Vijay and Kendall, Alex and Cipolla, Roberto},
  journal = {IEEE TPAMI}, volume = {39}, number = {12}, pages = {2481--2495}, year = {2017}
}
```
"""


def measured_splits(config: BundleConfig) -> list[tuple[str, dict]]:
    """(split name, metrics) for val and for each held-out drive (a recipe trained without it)."""
    return [(split, values) for split, values in config.metrics.items() if split != "held_out_drives"] + [
        (f"{drive} (drive held out of training)", values) for drive, values in sorted(config.held_out_drives.items())]


def encoder_text(training: dict) -> str:
    """Where the encoder's weights came from and, after frozen epochs, how it was fine-tuned."""
    if training.get("imagenet_weights_used"):
        text = "Encoder initialised from ImageNet."
    elif training.get("encoder_weights") == "hed":
        text = "Encoder initialised from HED's VGG16 (ImageNet's, fine-tuned to find edges)."
    else:
        text = "No pretrained (ImageNet) weights."
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
                 " (`training.recompute_batchnorm`).")
    return text


def build_model_card(config: BundleConfig, repo_id: str | None = None) -> ModelCard:
    """A ModelCard with Hub metadata (model-index from the recorded metrics) and prose.

    With `repo_id`, the usage snippet downloads the bundle from that Hub repo first.
    """
    class_name = config.target_class.name
    val = config.metrics.get("val", {})
    eval_results = [
        EvalResult(task_type="image-segmentation", task_name=f"{class_name} segmentation", dataset_type="camvid",
                   dataset_name="CamVid (SegNet layout)", dataset_split=split, metric_type=metric,
                   metric_name=f"{class_name} {metric}", metric_value=float(metrics[metric]))
        for split, metrics in measured_splits(config)
        for metric in ("iou", "dice", "precision", "recall") if metric in metrics
    ]
    card_data = ModelCardData(
        library_name="keras", pipeline_tag="image-segmentation", license="cc-by-nc-4.0", datasets=["camvid"],
        tags=["image-segmentation", "unet", "camvid", "car", "keras"], metrics=["iou", "dice", "precision", "recall"],
        model_name=f"{config.architecture} {class_name} segmentation (CamVid)",
        eval_results=eval_results or None,
    )
    input_h, input_w = config.input_size
    trained_h, trained_w = config.trained_input_size
    size_facts = []
    if config.parameters is not None:
        size_facts.append(f"{config.parameters:,} parameters")
    if config.gflops_per_image is not None:
        size_facts.append(f"{config.gflops_per_image} GFLOPs per {input_h}x{input_w} image")
    size_text = f" ({', '.join(size_facts)})" if size_facts else ""
    training = config.training
    training_text = "config.json records no training details for this model." if not training else (
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
        + encoder_text(training)
        + (" The last epoch was kept (a schedule fixed in advance, not picked on val)"
           if training.get("keep") == "last" else " The checkpoint with the best val IoU was kept")
        + (f"; its threshold was chosen on {config.threshold_selected_on}."
           if (config.threshold_selected_on or "val") != "val" else "; its threshold is the best one on val.")
    )
    feeding_text = (
        f"Feed it images resized to exactly {input_h}x{input_w}."
        if config.fixed_input else
        f"It is fully convolutional: resize a photo (aspect kept) to about as many pixels as "
        f"{input_h}x{input_w} and pad height and width to multiples of {config.stride}."
    ) + (f" That scale is not the training one ({trained_h}x{trained_w}): it was chosen on "
         f"{config.input_size_selected_on}, and every figure here was measured at it."
         if config.input_size_selected_on else ""
    ) + (" The metrics above average each photo's answer with its mirror image's (mirrored back), as the app "
         "does when config.json says `\"test_time_flip\": true`." if config.test_time_flip else ""
    ) + (" The figures above were measured through the int8 ONNX graph below, which is what the app serves: "
         "`model.keras` computes in float and answers a little differently, so measure it before relying on "
         "them for it." if onnx_graph_weights(config) == "int8" else "")
    metric_rows = [(name, f"{value:.4f}" if isinstance(value, float) else value) for name, value in val.items()]
    return ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE, title=card_data.model_name, class_name=class_name,
        architecture=config.architecture, size_text=size_text, val_images=val.get("images", "?"),
        metrics=metric_rows, training_text=training_text, feeding_text=feeding_text,
        threshold=config.threshold, repo_id=repo_id, graphs=graph_rows(config),
        held_out=sorted(config.held_out_drives.items()),
        held_out_runs=max((m.get("runs", 1) for m in config.held_out_drives.values()), default=1),
    )


def graph_rows(config: BundleConfig) -> list[tuple[str, dict]]:
    """(file name, its record with `input_text` and `size_text`) for each serving graph config.json lists."""
    rows = []
    record = config.serving_graphs or {}
    for name, entry in sorted(record.get("files", {}).items()):
        shape = entry["input_shape"]
        arithmetic = ARITHMETIC_NAMES.get(entry.get("weights", record.get("weights", "float16")), "")
        runtime = RUNTIME_FAMILIES[entry.get("runtime", LITERT)]
        rows.append((name, {**entry, "size_text": f"{entry['bytes'] / 2**20:.1f} MiB",
                            "runtime_text": f"{runtime} ({arithmetic})",
                            "input_text": f"{shape[1]}x{shape[2]}" if shape else "any height and width"}))
    return rows


def write_model_card(bundle_dir: Path, repo_id: str | None = None) -> None:
    atomic_write_text(Path(bundle_dir) / CARD_FILE, str(build_model_card(read_config(bundle_dir), repo_id)))
