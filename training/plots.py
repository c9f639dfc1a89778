"""The pictures a person would rather look at than read: curves, sweep, gallery."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from demo.model_facts import CAR  # noqa: E402


def plot_training_curves(log_csv: Path, path: Path, class_name: str = CAR) -> None:
    """Loss and validation IoU (of the class `class_name`) per epoch from the CSV log Keras wrote."""
    with open(log_csv) as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, (loss_axes, iou_axes) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("loss", "train"), ("val_loss", "val")):
        if rows and key in rows[0]:
            loss_axes.plot(epochs, [float(row[key]) for row in rows], label=label)
    loss_axes.set(title="loss", xlabel="epoch")
    loss_axes.legend()
    for key, label in (("iou", "train"), ("val_iou", "val")):
        if rows and key in rows[0]:
            iou_axes.plot(epochs, [float(row[key]) for row in rows], label=label)
    iou_axes.set(title=f"{class_name} IoU (threshold 0.5)", xlabel="epoch", ylim=(0, 1))
    iou_axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def plot_threshold_sweep(sweep: dict, best_threshold: float, path: Path, class_name: str = CAR) -> None:
    """The val metrics of the class `class_name` (`demo.model_facts.class_words`) at each threshold."""
    figure, axes = plt.subplots(figsize=(6, 3.6))
    for key in ("iou", "dice", "precision", "recall"):
        axes.plot(sweep["threshold"], sweep[key], label=key)
    axes.axvline(best_threshold, color="grey", linestyle="--", label=f"best {best_threshold:.2f}")
    axes.set(title=f"{class_name} metrics vs threshold (val)", xlabel="threshold", ylim=(0, 1))
    axes.legend(loc="lower center", ncol=3, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def plot_gallery(rows: list[tuple[str, np.ndarray, float]], path: Path, columns: int = 3,
                 legend: dict[str, tuple[int, int, int]] | None = None, title: str | None = None) -> None:
    """A grid of overlays, each titled with its name and IoU; `legend` names the overlay colours (RGB)."""
    from matplotlib.patches import Patch

    count = len(rows)
    lines = max(1, -(-count // columns))
    figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3.4 * lines + 0.6 * bool(legend or title)))
    for axis, row in zip(np.ravel(axes), rows + [None] * (lines * columns - count)):
        axis.axis("off")
        if row:
            name, image, iou = row
            axis.imshow(image)
            axis.set_title(f"{name}  IoU {iou:.3f}", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    if legend:
        figure.legend(handles=[Patch(color=np.asarray(rgb) / 255, label=name) for name, rgb in legend.items()],
                      loc="lower center", ncol=len(legend), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.05 if legend else 0, 1, 1))
    figure.savefig(path, format="png", dpi=80)
    plt.close(figure)
