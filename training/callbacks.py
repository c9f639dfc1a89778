"""Checkpoints, early stopping and resume state, written so that nothing is lost.

Every epoch: the full model with its optimizer goes to run/last.keras, the best
one by val IoU to run/best.keras, and the counters to run/state.json. Each file
is written under a temporary name and renamed, so a run killed at any instant
leaves the previous epoch's files whole, and `--resume` continues from them.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from demo.bundle_files import atomic_write, atomic_write_text

STATE_FILE = "state.json"


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    best_iou: float = -1.0
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    wall_time_s: float = 0.0
    epoch_times_s: list = field(default_factory=list)
    run_dir: str = ""

    @property
    def last_checkpoint(self) -> Path:
        return Path(self.run_dir) / "last.keras"


def load_state(run_dir: Path) -> RunState | None:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file() or not (Path(run_dir) / "last.keras").is_file():
        return None
    state = RunState(**json.loads(path.read_text()))
    state.run_dir = str(run_dir)
    return state


class TrainingState(keras.callbacks.Callback):
    """Saves last and best checkpoints atomically, stops early, and remembers where it was."""

    def __init__(self, run_dir: Path, patience: int | None, state: RunState | None = None, monitor: str = "val_iou"):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.patience = patience
        self.monitor = monitor
        self.state = state or RunState(run_dir=str(run_dir))
        self._epoch_started = 0.0

    @property
    def best_checkpoint(self) -> Path | None:
        return self.run_dir / "best.keras" if self.state.best_epoch else None

    best_iou = property(lambda self: self.state.best_iou)
    best_epoch = property(lambda self: self.state.best_epoch)
    epoch = property(lambda self: self.state.epoch)
    wall_time_s = property(lambda self: self.state.wall_time_s)

    @property
    def median_epoch_s(self) -> float | None:
        return round(statistics.median(self.state.epoch_times_s), 1) if self.state.epoch_times_s else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_started
        value = float((logs or {}).get(self.monitor, float("nan")))
        state = self.state
        state.epoch = epoch + 1
        state.wall_time_s += seconds
        state.epoch_times_s.append(round(seconds, 1))
        if value > state.best_iou:
            state.best_iou, state.best_epoch, state.epochs_without_improvement = value, epoch + 1, 0
            self._save_model(self.run_dir / "best.keras")
        else:
            state.epochs_without_improvement += 1
        self._save_model(self.run_dir / "last.keras")
        self._write_state()
        if self.patience is not None and state.epochs_without_improvement >= self.patience:
            print(f"\nstopping early: no better {self.monitor} for {self.patience} epochs")
            self.model.stop_training = True

    def _save_model(self, path: Path):
        atomic_write(path, self.model.save)

    def _write_state(self):
        atomic_write_text(self.run_dir / STATE_FILE, json.dumps(asdict(self.state), indent=2))
