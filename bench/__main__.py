"""Every benchmark of the project in one run on one machine; writes BENCHMARKS.md.

    python -m bench                  # full run (minutes, on idle cores): BENCHMARKS.md
    python -m bench --quick          # quicker: checks that every benchmark still runs

1. end-to-end latency of a 480x360 photo, engine against the seed's steps (default model, vgg16-unet)
2. a slider move against a full inference (bench/slider.py)
3. forward FLOP/s against the machine's own float32 matrix-multiply rate, with a profile
4. CPU serving runtimes (tf.function, XLA, TFLite/LiteRT float32 and int8, ONNX Runtime): latency, val IoU
5. training throughput, the project's tf.data pipeline against the seed's arrays in memory
6. app cold start (python app.py to the first /segment answer), the first photo of each shape class, peak
   and steady resident memory: serving the bundle's graphs against converting model.keras at start
7. /segment throughput and latency under 1, 4 and 16 parallel gradio_client callers
8. clips: end-to-end fps of a 10 s 480x360 clip and a 1280x720 one, and a threshold move's redraw (bench/clips.py)
9. flicker across a clip's frames, with and without smoothing across frames (bench/flicker.py)

Quick mode uses tiny models, few repeats and the CamVid pairs in tests/fixtures: its numbers
check the scripts, they describe nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parent.parent
FULL_OUTPUT = REPO_ROOT / "BENCHMARKS.md"
QUICK_OUTPUT = REPO_ROOT / "runs" / "BENCHMARKS.quick.md"  # never over the real one
CAMVID_DIR = Path(os.environ.get("CAMVID_DIR", REPO_ROOT.parent / "shared" / "data" / "camvid"))
FIXTURE_CAMVID_DIR = REPO_ROOT / "tests" / "fixtures" / "camvid"


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int  # timed runs of every latency
    warmup: int  # untimed runs before them
    matmul_size: int
    vgg16_input: tuple[int, int]
    profiled_passes: int
    data_dir: Path
    training_frame_size: tuple[int, int]
    training_frames: int
    training_steps: int
    training_model: dict  # build_model("unet", **training_model)
    app_launches: int
    load_levels: tuple[int, ...]
    load_seconds: float


FULL = Settings(quick=False, repeats=20, warmup=2, matmul_size=2048, vgg16_input=(224, 224), profiled_passes=5,
                data_dir=CAMVID_DIR, training_frame_size=(176, 240), training_frames=64, training_steps=20,
                training_model={"base_filters": 16}, app_launches=3, load_levels=(1, 4, 16), load_seconds=20)
QUICK = Settings(quick=True, repeats=3, warmup=1, matmul_size=512, vgg16_input=(64, 64), profiled_passes=2,
                 data_dir=FIXTURE_CAMVID_DIR, training_frame_size=(64, 96), training_frames=4, training_steps=3,
                 training_model={"base_filters": 4, "depth": 2}, app_launches=1, load_levels=(1, 4, 16),
                 load_seconds=2)


class Progress:
    """One line per step on stderr, and for each step its wall time and the share of the machine's
    CPU that other processes used meanwhile: a step measured while something else ran is flagged."""

    def __init__(self):
        self.started = time.perf_counter()
        self.steps = []  # (name, wall seconds, other processes' share of all cores)
        self._current = None

    def __call__(self, message: str) -> None:
        from bench.machine import machine_busy_seconds, own_cpu_seconds

        now, busy, own = time.perf_counter(), machine_busy_seconds(), own_cpu_seconds()
        if self._current:
            name, started, started_busy, started_own = self._current
            wall = now - started
            others = max(0.0, (busy - started_busy) - (own - started_own))
            self.steps.append((name, wall, others / (wall * os.cpu_count())))
        self._current = (message, now, busy, own)
        print(f"[{now - self.started:6.1f} s, cpu {own:6.1f} s] {message}", file=sys.stderr, flush=True)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


def command_line(argv: list[str]) -> str:
    """The command as a person would type it from the repository root."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(REPO_ROOT)
    return shlex.join([str(python), "-m", "bench", *argv])


def run(settings: Settings, bundle_dir: Path | None, command: str, progress: Progress):
    import tensorflow as tf

    from bench import efficiency, latency, runtimes, serving, training_speed
    from bench.bundles import default_model, network_input_size, repo_path, vgg16_unet
    from bench.machine import describe_machine, other_busy_processes
    from bench.report import Results
    from bench.slider import PHOTO, measure_slider
    from demo.engine import SegmentationEngine
    from demo.imaging import load_rgb

    tf.get_logger().setLevel("ERROR")  # retracing notices: each runtime builds its own engine on purpose
    results = Results(settings=settings, command=command,
                      started_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    progress("machine")
    results.machine = describe_machine()
    results.load_before = other_busy_processes()
    photo = load_rgb(PHOTO)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, \
            default_model(bundle_dir, settings.quick) as default:
        scratch = Path(scratch)
        progress(f"building the vgg16-unet bundle at {settings.vgg16_input[0]}x{settings.vgg16_input[1]}")
        models = [default, vgg16_unet(scratch, settings.vgg16_input)]
        results.models = [(served.name, served.description, served.trained) for served in models]

        for served in models:
            progress(f"1. end-to-end latency: {served.name}")
            results.end_to_end.append(latency.measure_end_to_end(served, PHOTO, settings.repeats, settings.warmup))

        progress("2. slider move against a full inference")
        results.slider = measure_slider(SegmentationEngine(default.bundle.model, default.bundle.config), photo,
                                        settings.repeats, settings.warmup)

        progress(f"3. matmul rate ({settings.matmul_size}x{settings.matmul_size} float32)")
        results.matmul = efficiency.matmul_rates(settings.matmul_size, settings.repeats, settings.warmup)
        for served in models:
            progress(f"3. forward FLOP/s and profile: {served.name}")
            network_input = network_input_size(served.bundle.config, *photo.shape[:2])
            results.efficiency.append(efficiency.measure_forward(
                served.name, served.bundle.model, served.bundle.config, network_input, settings.repeats,
                settings.warmup, settings.profiled_passes))

        progress(f"4. serving runtimes on {repo_path(settings.data_dir)} val")
        results.runtimes = runtimes.measure_runtimes(default.bundle, PHOTO, settings.data_dir, settings.repeats,
                                                     settings.warmup)

        progress("5. training throughput")
        results.training = training_speed.measure_training(
            settings.data_dir, settings.training_frame_size, settings.training_frames, settings.training_steps,
            settings.training_model)

        progress(f"6-7. app cold start ({settings.app_launches}x each way), shape classes and load "
                 f"({', '.join(map(str, settings.load_levels))} callers, {settings.load_seconds:g} s each)")
        # The full run serves the app with the packages the Space installs; quick, with this one.
        app_python = sys.executable if settings.quick else serving.space_interpreter(REPO_ROOT / "runs")
        results.app_python = "this .venv" if settings.quick else "a venv with requirements.txt alone, as the Space"
        results.start_ups, results.load = serving.measure_serving(
            default.bundle.path, PHOTO, settings.app_launches, settings.repeats, settings.load_levels,
            settings.load_seconds, scratch, python=app_python)

        progress("8. clips: first pass and threshold move, 480x360 and 1280x720")
        from bench.clips import measure_clips

        clip_engine = SegmentationEngine(default.bundle.model, default.bundle.config)
        clip_engine.warm_up()
        results.clips = measure_clips(clip_engine, settings.data_dir, settings.quick, 1 if settings.quick else 3)

        from bench import flicker
        progress(f"9. flicker: H.264 pans over {repo_path(settings.data_dir)} val")
        results.flicker = flicker.measure_all(SegmentationEngine(default.bundle.model, default.bundle.config),
                                              settings.data_dir, *flicker.pans_and_frames(settings.quick),
                                              bundle_name="the default model (above)")
    progress("done")
    results.load_after = other_busy_processes()
    results.elapsed_s = progress.elapsed_s
    results.steps = list(progress.steps)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and few repeats, tests/fixtures data: checks the scripts run")
    parser.add_argument("--output", type=Path,
                        help=f"the report (default {FULL_OUTPUT.name}; quick: {QUICK_OUTPUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--bundle", type=Path,
                        help="the model to benchmark as the default (default: demo/default_model, else an "
                             "untrained compact U-Net)")
    parser.add_argument("--data-dir", type=Path,
                        help="CamVid root with a val split (default $CAMVID_DIR or ../shared/data/camvid; "
                             "quick: tests/fixtures/camvid)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.data_dir:
        settings = replace(settings, data_dir=args.data_dir)
    output = args.output or (QUICK_OUTPUT if args.quick else FULL_OUTPUT)

    from bench.report import render
    from demo.bundle_files import atomic_write_text

    progress = Progress()
    results = run(settings, args.bundle, command_line(argv), progress)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, render(results))
    progress(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
