#!/usr/bin/env bash
# The comparison runs of the README's results table, on one epoch budget (8 epochs, batch 8,
# Adam 2e-3 with cosine decay), all from scratch on CamVid train, selected on val.
# Usage: bash scripts/compare_runs.sh [DATA_DIR]      (each run writes runs/<name>/bundle)
# Then:  .venv/bin/python -m bench.runs_table runs/*/bundle
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/camvid}
COMMON=(--data-dir "$DATA" --architecture unet --epochs 8 --batch-size 8 --learning-rate 2e-3 --patience 8 --verbose 2)
run() { local name=$1; shift; [ -f "runs/$name/bundle/config.json" ] && return 0
        .venv/bin/python -m training.train "${COMMON[@]}" --output-dir "runs/$name" "$@" > "runs/$name.log" 2>&1; }
mkdir -p runs
run c8-unet-180x240-bcedice-aug   --input-size 180x240 --loss bce+dice
run c8-unet-180x240-bce-aug       --input-size 180x240 --loss bce
run c8-unet-180x240-bcedice-noaug --input-size 180x240 --loss bce+dice --no-augment
run c8-unet-224x224-bcedice-aug   --input-size 224x224 --resize stretch --loss bce+dice
# The seed's recipe costs hours here: time its steps (batch 2) and project one epoch, encoder trainable and frozen.
.venv/bin/python -m training.time_steps --data-dir "$DATA" --recipe seed --encoder-weights none --steps 10
.venv/bin/python -m training.time_steps --data-dir "$DATA" --recipe seed --encoder-weights none --freeze-encoder --steps 10
