"""`python -m bench.runs_table`: the README's table rows come from the bundles' own records."""
from __future__ import annotations

import json
import shutil

from bench.runs_table import main
from demo.bundle import DatasetInfo
from helpers import serving_config


def test_a_row_reports_the_bundles_recorded_metrics_and_serving_settings(tiny_bundle_dir, tmp_path, capsys):
    bundle_dir = shutil.copytree(tiny_bundle_dir, tmp_path / "some-run" / "bundle")
    config = json.loads((bundle_dir / "config.json").read_text())
    config["test_time_flip"] = True
    config.setdefault("training", {})["ema"] = 0.99
    (bundle_dir / "config.json").write_text(json.dumps(config))

    main([str(bundle_dir), "--repeats", "1"])

    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "some-run"
    assert "EMA 0.99" in cells[1] and "served mirror-averaged" in cells[1]
    assert cells[2] == f"{config['metrics']['val']['iou']:.4f}"
    assert cells[-1].endswith(" ms") and float(cells[-1][:-3]) > 0


def test_held_out_drive_figures_get_their_own_column():
    from bench.runs_table import held_out_text

    recorded = serving_config(metrics={"val": {"iou": 0.9},
                                       "held_out_drives": {"0006R0": {"iou": 0.81, "runs": 2}, "0001TP": {"iou": 0.7}}})
    assert held_out_text(recorded) == "0001TP 0.7000, 0006R0 0.8100 (mean of 2 runs)"
    holdout_run = serving_config(metrics={"val": {"iou": 0.8}},
                                 dataset=DatasetInfo(train_drives=["0001TP", "0016E5"], val_drives=["0006R0"]))
    assert held_out_text(holdout_run) == "0006R0 0.8000 (its val)"
    same_drive = serving_config(metrics={"val": {"iou": 0.8}},
                                dataset=DatasetInfo(train_drives=["0016E5"], val_drives=["0016E5"]))
    assert held_out_text(same_drive) == "-" and held_out_text(serving_config(metrics={"val": {"iou": 0.8}})) == "-"


def test_encoder_costs_prints_a_row_per_architecture(capsys):
    from bench.encoder_costs import main as encoder_costs

    encoder_costs(["--input-size", "64x96", "--architectures", "unet", "efficientnet-lite0-unet", "--repeats", "1"])
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert [row[0] for row in cells] == ["unet", "efficientnet-lite0-unet"]
    assert cells[0][3] == "64x96" and cells[1][3] == "64x96"  # both strides divide 64x96
    assert float(cells[1][1].rstrip(" M")) > float(cells[0][1].rstrip(" M"))  # the encoder costs parameters
    assert all(float(row[4].rstrip(" ms")) > 0 for row in cells)
