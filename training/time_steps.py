"""Measure training steps and project the time of one epoch, before committing to a long run.

    python -m training.time_steps --recipe seed --encoder-weights none --steps 10
    python -m training.time_steps --architecture unet --input-size 270x360 --batch-size 8

Takes the same flags as `training.train` (the output folder is not used) and times
`--steps` optimizer steps on real CamVid batches from the training pipeline, after two
warm-up steps that trace the graph. Prints the median step and the projected epoch.
"""
from __future__ import annotations

import sys

from training.config import TrainingConfig
from training.train import build_parser, build_training_model, parse_namespace, resolve, settle_target, training_pipeline


def main(argv: list[str] | None = None) -> int:
    from demo.engine import median_ms

    argv = [*(sys.argv[1:] if argv is None else argv), "--output-dir", "."]  # nothing is written
    parser = build_parser()
    parser.add_argument("--steps", type=int, default=10, help="steps to time after two warm-up steps")
    options = parse_namespace(argv, parser)
    config = settle_target(resolve(TrainingConfig.from_namespace(options)))
    dataset, crop, frames = training_pipeline(config)
    batches = iter(dataset.repeat())
    steps_per_epoch = frames // config.batch_size
    model = build_training_model(config, total_steps=steps_per_epoch * config.epochs)
    # The batches are made first, so that only the optimizer steps are timed (the first two trace the graph).
    prefetched = iter([next(batches) for _ in range(options.steps + 2)])

    def step():
        images, masks, weights = next(prefetched)
        model.train_on_batch(images, masks, sample_weight=weights)

    step_s = median_ms(step, repeats=options.steps, warmup=2) / 1000
    print(f"{config.architecture} at {config.input_size[0]}x{config.input_size[1]} (crops {crop[0]}x{crop[1]}), batch "
          f"{config.batch_size}: median step {step_s:.2f} s over {options.steps} steps; one epoch of {steps_per_epoch} "
          f"steps projected at {step_s * steps_per_epoch / 60:.1f} min (training steps only, no validation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
