"""Interrupted training: Ctrl-C and a killed process leave a usable checkpoint, and --resume goes on."""

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers import ROOT, wait_for_epoch
from transfer import outputs
from transfer.cli import app

pytestmark = pytest.mark.slow

runner = CliRunner()
EPOCHS = 12


def start_training(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "transfer.cli", "train", *argv], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_ctrl_c_then_kill_then_resume_completes_the_run(tmp_path, digits_dir):
    run = tmp_path / "run"
    partial = outputs.partial_dir(run)
    backup = partial / "stages" / "scratch" / "backup"

    # Ctrl-C: a clear message, exit code 130, the staging folder kept.
    process = start_training(str(digits_dir), "--backbone", "lenet", "--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--flip", "none", "--out", str(run))
    wait_for_epoch(process, backup, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Training interrupted" in stderr and f"transfer train --resume {run}" in stderr
    assert not run.exists() and (partial / outputs.CHECKPOINT).is_file()

    # The best checkpoint so far is usable as it is.
    image = next((digits_dir / "7").iterdir())
    predicted = runner.invoke(app, ["predict", str(partial), str(image), "--format", "json"])
    assert predicted.exit_code == 0, predicted.output
    assert len(json.loads(predicted.stdout)[0]["predictions"]) == 3

    # Resume, then kill the process outright (no handler runs) a few epochs later.
    process = start_training("--resume", str(run))
    killed_after = wait_for_epoch(process, backup, 5)
    process.kill()
    process.communicate()
    logged = pd.read_csv(partial / "stages" / "scratch" / outputs.HISTORY)
    assert not run.exists()

    # Resume to the end: every epoch once, the earlier ones as they were logged.
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "restoring the weights and optimizer of the last completed epoch" in result.output
    assert f"Epoch {killed_after + 1}/{EPOCHS}" in result.output and "Epoch 1/" not in result.output
    history = pd.read_csv(run / outputs.HISTORY)
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    before = logged.drop_duplicates("epoch", keep="last").set_index("epoch")["val_loss"]
    after = history.set_index(history["epoch"] - 1)["val_loss"]
    pd.testing.assert_series_equal(after.loc[before.index], before, check_names=False)
    metrics = json.loads((run / outputs.METRICS).read_text())
    assert metrics["resumed"] is True and metrics["epochs_run"] == EPOCHS and metrics["val_accuracy"] > 0.8
    assert not partial.exists()
    assert sorted(p.name for p in run.iterdir()) == sorted([
        outputs.MODEL, outputs.CHECKPOINT, outputs.LABELS, outputs.CONFIG, outputs.HISTORY, outputs.CURVES,
        outputs.SPLIT, outputs.SKIPPED, outputs.DUPLICATES, outputs.METRICS,
    ])
