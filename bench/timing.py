"""Timing helpers shared by every benchmark: repeated runs after warm-ups, medians, percentiles."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from demo.engine import timed


def interleaved_durations_ms(actions: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Milliseconds of each of `actions` (name -> callable), timed in `repeats` rounds of one call
    each, so that a slow spell of the machine falls on all of them alike rather than on one."""
    for action in actions.values():
        for _ in range(warmup):
            action()
    durations = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            durations[name].append(1000 * timed(action)[1])
    return durations


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) by linear interpolation between the sorted values."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


@dataclass(frozen=True)
class Latency:
    """Milliseconds over repeated runs: the median and the quartiles around it."""

    median: float
    quartiles: tuple[float, float]

    @classmethod
    def of(cls, durations: list[float]) -> Latency:
        return cls(statistics.median(durations), (percentile(durations, 0.25), percentile(durations, 0.75)))

    def __str__(self) -> str:
        return f"{self.median:,.1f} ({self.quartiles[0]:,.1f}-{self.quartiles[1]:,.1f})"
