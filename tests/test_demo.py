"""`make demo`'s last lines: what they print is what the run wrote."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_prints_the_run_metrics_compactly_and_faithfully(tmp_path):
    """The metrics line is one line of JSON equal to metrics.json: spaces inside its strings kept."""
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "/lenet/metrics.json" in line)
    command = (line.lstrip("\t@").replace("$(BIN)", str(Path(sys.executable).parent)).replace("$(DEMO)", str(tmp_path))
               .replace("$$", "$"))
    metrics = {"val_accuracy": 0.875, "best_stage": "frozen", "calibration": {"method": "temperature scaling (on val)"},
               "stage_seconds": {"frozen": 1.5}, "note": "two  spaces\nand a newline"}
    (tmp_path / "lenet").mkdir()
    (tmp_path / "lenet" / "metrics.json").write_text(json.dumps(metrics, indent=2))
    printed = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    assert printed.count("\n") == 1 and printed.startswith("metrics: ")
    assert json.loads(printed.removeprefix("metrics: ")) == metrics
    assert len(printed) < len(json.dumps(metrics, indent=2)), "compact"
