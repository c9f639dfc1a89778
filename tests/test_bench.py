"""`python -m bench --quick` keeps working: every section of the report is written, with numbers; and
`python -m bench.compare_bundles` times bundles side by side."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runtimes import RUNTIMES

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "Machine",
    "1. End-to-end latency of one 480x360 photo",
    "2. A slider move against a full inference",
    "3. Efficiency: forward FLOP/s against the machine's matrix-multiply rate",
    "4. CPU serving runtimes for the default model",
    "5. Training throughput",
    "6. App cold start and memory",
    "7. Throughput under concurrency",
    "8. Clips",
    "9. Flicker",
    "Targets",
)
TABLE_NUMBER = re.compile(r"\|\s*\d[\d,]*(\.\d+)?\s*(ms|x|%)?\s*\|")


def sections_of(report: str) -> dict[str, str]:
    parts = re.split(r"^## ", report, flags=re.MULTILINE)[1:]
    return {part.splitlines()[0]: part for part in parts}


def test_quick_mode_writes_every_section_with_numbers(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    finished = subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(output)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-4000:]

    report = output.read_text()
    assert f"-m bench --quick --output {output}" in report, "the report names the command that made it"
    sections = sections_of(report)
    assert list(sections) == list(SECTIONS)
    assert re.search(r"\| cores \| \d+ logical", report) and re.search(r"\| memory \| [\d.]+ GiB", report)
    for title, text in list(sections.items())[1:]:
        assert TABLE_NUMBER.search(text), f"section '{title}' has no measured number in a table"
    runtime_rows = [line for line in sections[SECTIONS[4]].splitlines()
                    if line.startswith("| ") and not line.startswith("| runtime |")]
    assert len(runtime_rows) == len(RUNTIMES) and not any("| failed |" in row for row in runtime_rows), runtime_rows
    assert "**The app serves ONNX Runtime, the bundle's ONNX graph (the app's runtime, MODEL_RUNTIME=onnxruntime)** (`demo/runtimes.py`)" in (
        sections[SECTIONS[4]])
    assert "Errors: 0." in sections[SECTIONS[7]], "the app answers every caller"


def test_compare_bundles_times_bundles_and_scales_side_by_side(tiny_bundle_dir, capsys):
    from bench.compare_bundles import main

    assert main([str(tiny_bundle_dir), f"{tiny_bundle_dir}@90x120", "--repeats", "3", "--warmup", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    assert "| 180x240 | ONNX Runtime (float16 weights, float32 arithmetic) |" in rows[0]
    assert "| 90x120 |" in rows[1]
    assert rows[0].endswith("| 1.00 |") and float(rows[1].split("|")[-2]) > 0


@pytest.mark.parametrize("argument, expected", [
    ("nowhere", "nowhere"),
    ("{bundle}@big", "expected HEIGHTxWIDTH"),
])
def test_compare_bundles_says_what_is_wrong_with_an_argument(tiny_bundle_dir, tmp_path, capsys, argument, expected):
    from bench.compare_bundles import main

    assert main([argument.format(bundle=tiny_bundle_dir).replace("nowhere", str(tmp_path / "nowhere"))]) == 1
    assert expected in capsys.readouterr().err


def test_benchmark_callers_share_one_tls_context(monkeypatch, tmp_path):
    """gradio_client builds a new TLS context (certifi's whole CA bundle) for every HTTP call unless given
    one: the benchmark's callers get one, still verifying certificates."""
    import ssl

    import gradio_client

    from bench.serving import client_for, shared_tls_context

    made = []
    monkeypatch.setattr(gradio_client, "Client", lambda *args, **options: made.append(options))
    client_for("http://127.0.0.1:1/", tmp_path)
    client_for("http://127.0.0.1:1/", tmp_path)
    context = made[0]["ssl_verify"]
    assert isinstance(context, ssl.SSLContext) and made[1]["ssl_verify"] is context is shared_tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_request_profile_splits_a_request_between_caller_and_app(tiny_bundle_dir, tmp_path, capsys):
    from bench.request_profile import CLIENT_PHASES, GRADIO_CLIENT, PLAIN_HTTP, SERVER_PHASES, SHARED_TLS, main

    output = tmp_path / "profile.md"
    assert main(["--requests", "2", "--bundle", str(tiny_bundle_dir), "--output", str(output)]) == 0
    report = output.read_text()
    assert report in capsys.readouterr().out
    assert f"| milliseconds, median | {GRADIO_CLIENT} | {SHARED_TLS} | {PLAIN_HTTP} |" in report
    rows = {line.split(" | ")[0].strip("| *"): line.split(" | ")[1:] for line in report.splitlines()
            if line.startswith("| ")}
    expected = ["the request, as the caller waits (total)", *(f"caller: {phase}" for phase in CLIENT_PHASES),
                *(f"app: {label}" for label in SERVER_PHASES.values())]
    for row in expected:
        cells = [cell.strip("| *\n") for cell in rows[row]]
        assert len(cells) == 3 and all(float(cell.replace(",", "")) >= 0 for cell in cells), (row, cells)
    # Every way's requests were found in the app's own traces: the handler took time in each.
    assert all(float(cell.strip("| ").replace(",", "")) > 0 for cell in rows[f"app: {SERVER_PHASES['fn_call_ms']}"])
    ratio_row = next(cells for name, cells in rows.items() if name.startswith("the request / the engine's"))
    assert all(cell.strip("| ").endswith("x") for cell in ratio_row)
    assert "| decode the upload (`load_rgb`) |" in report
