"""The model card (the bundle's README.md), generated from its config.json."""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from demo.bundle import CARD_FILE, BundleConfig
from demo.bundle_files import atomic_write_text, read_config
from demo.model_facts import (
    HELD_OUT_RECIPE,
    INT8_CALIBRATION,
    CAR,
    capitalised,
    class_slug,
    class_words,
    dataset_in_words,
    feeding_in_words,
    held_out_scores,
    learnt_from_camvid,
    runs_in_words,
    threshold_in_words,
    training_in_words,
    validation_frames_in_words,
    what_it_is,
)
from demo.runtimes import ARITHMETIC_NAMES, LITERT, RUNTIME_FAMILIES

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

Binary semantic segmentation of **{{ plural }}** in street photos. {{ what_it_is }}
A Keras model, architecture `{{ architecture }}`{{ size_text }}, trained on {{ dataset }}.
{{ threshold_text }} Served by the {{ app_name }} Gradio app; this folder is a complete *model bundle*.

{% if held_out %}## Results on streets it never saw

Each drive below is measured {{ held_out_recipe }} (`training.holdout`): what to expect on a
photo of a new street.

| held-out drive | frames | IoU | Dice | precision | recall |
|---|---|---|---|---|---|
{% for drive, m in held_out %}| {{ drive }} | {{ m.images }} | {{ "%.4f"|format(m.iou) }} | {{ "%.4f"|format(m.dice) }} | {{ "%.4f"|format(m.precision) }} | {{ "%.4f"|format(m.recall) }} |
{% endfor %}
{% if held_out_runs %}
They are {{ held_out_runs }} (other seeds) for each drive: one run's figure moves by a few
hundredths from seed to seed.
{% endif %}{% endif %}## Results on {{ val_title }} ({{ val_images }} frames, pixel counts summed over the split)

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
{{ feeding_text }} The output is `(batch, H, W, 1)` {{ singular }} probabilities; {{ singular }} where it is at least
`config["threshold"]` ({{ threshold }}). The Gradio app in this repository does all of this
(`demo.engine.SegmentationEngine`), including EXIF orientation and any image size.
{% if graphs %}
## Serving graphs

What the app runs, converted from `model.keras`, so serving needs neither TensorFlow nor Keras:
the ONNX graph with ONNX Runtime, the faster; else the LiteRT graphs. The runtime column says how each
computes; an int8 graph (`training.export_graphs --int8`) is {{ int8_calibration }}.
Each records the SHA-256 of the `model.keras` it came from; `config.json` (`serving_graphs`) records each file's.

| file | runtime | input | size | SHA-256 | largest difference from model.keras (probe image) |
|---|---|---|---|---|---|
{% for name, entry in graphs %}| `{{ name }}` | {{ entry.runtime_text }} | {{ entry.input_text }} | {{ entry.size_text }} | `{{ entry.sha256[:16] }}...` | {{ entry.max_difference_from_keras }} |
{% endfor %}
Regenerate them after any change to `model.keras`: `python -m training.export_graphs BUNDLE_DIR`
(with `--int8 DATA_DIR` for an int8 ONNX graph).
{% endif %}
## Limitations

{% if camvid -%}
CamVid's videos were filmed in daylight, in 2007 and 2008, from a car's dashboard: 367
training frames from three drives. Expect worse results at night, in rain or snow, on other
continents' {{ plural }} and streets, from other viewpoints (aerial, pedestrian, close-ups) and on {{ plural }}
much smaller or larger in the frame than in CamVid. {% if class_caveat %}{{ class_caveat }}
{% endif %}
{%- else -%}
It knows only what {{ dataset_name }} shows: expect worse results on images unlike its training images
(other places, light, cameras, viewpoints) and on {{ plural }} much smaller or larger in the frame than there.
{% endif %}{{ validation_frames }}. Not for any safety-related use.
{% if camvid %}
## Dataset and citation

CamVid as prepared for SegNet (480x360, 11 classes + unlabelled; {% if class_id != 255 %}class {{ class_id }} = {{ singular
}}{% else %}its {{ singular }} pixels, as binary masks{% endif %}), for personal and
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
```{% endif %}
"""


# What is known of a class's labels and misses beyond what holds for every class (Limitations).
CLASS_CAVEATS = {
    CAR: "CamVid's labels mark vans and buses as car\ntoo, and its training frames show few of them from "
         "behind, most on one drive: trained without that\ndrive, this recipe missed most of them, so expect "
         "misses on large vehicles ahead.",
}


def measured_splits(config: BundleConfig) -> list[tuple[str, dict]]:
    """(split name, metrics) for val and for each held-out drive (a recipe trained without it)."""
    return [(split, values) for split, values in config.metrics.items() if split != "held_out_drives"] + [
        (f"{drive} (drive held out of training)", values) for drive, values in held_out_scores(config)]


def build_model_card(config: BundleConfig, repo_id: str | None = None) -> ModelCard:
    """A ModelCard with Hub metadata (model-index from the recorded metrics) and prose.

    With `repo_id`, the usage snippet downloads the bundle from that Hub repo first.
    """
    singular, plural = class_words(config)
    val = config.metrics.get("val", {})
    camvid = learnt_from_camvid(config)
    # The Hub links model-index's dataset type to a dataset repo: CamVid's, a Hub dataset's own id, else none.
    hub_dataset = config.dataset.extra.get("hub_dataset")
    dataset_type = "camvid" if camvid else hub_dataset or class_slug(config.dataset.name or "own data", "-")
    eval_results = [
        EvalResult(task_type="image-segmentation", task_name=f"{singular} segmentation", dataset_type=dataset_type,
                   dataset_name=config.dataset.name or "own data", dataset_split=split, metric_type=metric,
                   metric_name=f"{singular} {metric}", metric_value=float(metrics[metric]))
        for split, metrics in measured_splits(config)
        for metric in ("iou", "dice", "precision", "recall") if metric in metrics
    ]
    card_data = ModelCardData(
        library_name="keras", pipeline_tag="image-segmentation", license="cc-by-nc-4.0" if camvid else "other",  # own data: its owner's terms
        datasets=[dataset_type] if camvid or hub_dataset else None,
        tags=["image-segmentation", "unet", *(["camvid"] if camvid else []), class_slug(singular, "-"), "keras"],
        metrics=["iou", "dice", "precision", "recall"],
        model_name=f"{config.architecture} {singular} segmentation ({'CamVid' if camvid else config.dataset.name or 'own data'})",
        eval_results=eval_results or None,
    )
    input_h, input_w = config.input_size
    size_text = f" ({config.gflops_per_image} GFLOPs per {input_h}x{input_w} image)" if config.gflops_per_image is not None else ""
    metric_rows = [(name, f"{value:.4f}" if isinstance(value, float) else value) for name, value in val.items()]
    return ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE, title=card_data.model_name, singular=singular, plural=plural,
        class_id=config.target_class.id, class_caveat=CLASS_CAVEATS.get(singular.lower()),
        app_name=f"{class_slug(singular, '-')}-segmentation",
        what_it_is=what_it_is(config), architecture=config.architecture, size_text=size_text,
        dataset=dataset_in_words(config), threshold_text=threshold_in_words(config),
        val_images=val.get("images", "?"), val_title="CamVid val" if camvid else "its validation frames", camvid=camvid,
        dataset_name=config.dataset.name or "its training data", metrics=metric_rows, training_text=training_in_words(config),
        feeding_text=feeding_in_words(config), threshold=config.threshold, repo_id=repo_id,
        graphs=graph_rows(config), held_out=held_out_scores(config), held_out_recipe=HELD_OUT_RECIPE,
        held_out_runs=runs_in_words(max((m.get("runs", 1) for m in config.held_out_drives.values()), default=1)),
        int8_calibration=INT8_CALIBRATION, validation_frames=capitalised(validation_frames_in_words(config)),
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
