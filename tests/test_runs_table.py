"""`python -m training.runs_table`: the README's table rows come from the bundles' own records."""
from __future__ import annotations

import json
import shutil

from training.runs_table import main


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
