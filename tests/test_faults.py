"""Faults: Ctrl-C and a killed process during training leave a usable checkpoint and --resume goes
on; a full disk during training, export and evaluation leaves the earlier output intact; Ctrl-C
during predict keeps what was scored."""

import errno
import json
import signal
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers import ROOT, wait_for_epoch
from transfer.outputs import artifacts, layout
from transfer.cli import app

pytestmark = pytest.mark.slow

runner = CliRunner()
EPOCHS = 12


def start_training(*argv: str) -> subprocess.Popen:
    return start_command("train", *argv)


def start_command(*argv: str) -> subprocess.Popen:
    """`transfer ARGV` as a new process that Ctrl-C (SIGINT) reaches as it would in a terminal, also
    where the test runner was started in the background (which leaves SIGINT ignored, and a Python
    started with it ignored keeps it so)."""
    return subprocess.Popen(
        [sys.executable, "-m", "transfer.cli", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_then_kill_then_resume_completes_the_run(tmp_path, digits_dir):
    run = tmp_path / "run"
    partial = layout.partial_dir(run)
    backup = partial / "stages" / "scratch" / "backup"

    # Ctrl-C: a clear message, exit code 130, the staging folder kept.
    process = start_training(str(digits_dir), "--backbone", "lenet", "--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--flip", "none", "--out", str(run))
    wait_for_epoch(process, backup, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: Training interrupted" in stderr and "error:" not in stderr and f"transfer train --resume {run}" in stderr
    assert not run.exists() and (partial / layout.CHECKPOINT).is_file()

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
    logged = pd.read_csv(partial / "stages" / "scratch" / layout.HISTORY)
    assert not run.exists()

    # Resume to the end: every epoch once, the earlier ones as they were logged.
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "restoring the weights and optimizer of the last completed epoch" in result.output
    assert f"Epoch {killed_after + 1}/{EPOCHS}" in result.output and "Epoch 1/" not in result.output
    history = pd.read_csv(run / layout.HISTORY)
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    # The epochs whose backup was complete when killed, as they were logged (a later row can be in
    # the log without its backup: that epoch is run again, and the history keeps the new row).
    before = logged.drop_duplicates("epoch", keep="last").set_index("epoch")["val_loss"]
    before = before[before.index < killed_after]
    after = history.set_index(history["epoch"] - 1)["val_loss"]
    pd.testing.assert_series_equal(after.loc[before.index], before, check_names=False)
    metrics = json.loads((run / layout.METRICS).read_text())
    assert metrics["resumed"] is True and metrics["epochs_run"] == EPOCHS and metrics["val_accuracy"] > 0.8
    assert not partial.exists()
    assert sorted(p.name for p in run.iterdir()) == sorted([
        layout.MARKER, layout.MODEL, layout.LABELS, layout.CONFIG, layout.HISTORY, layout.CURVES,
        layout.SPLIT, layout.SKIPPED, layout.DUPLICATES, layout.METRICS, layout.NOVELTY,
    ])


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "the/file")


def earlier_output(path):
    """What the user had: {file name: bytes}, to compare after the failed command."""
    return {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_a_full_disk_leaves_the_earlier_outputs_intact(tmp_path, monkeypatch):
    import keras

    from tests.helpers import image_folder

    data = image_folder(tmp_path / "data", per_class=4)
    run, export, evaluation = tmp_path / "run", tmp_path / "export", tmp_path / "evaluation"
    train = ["train", str(data), "--backbone", "lenet", "--epochs", "1", "--no-augment", "--out", str(run)]
    assert runner.invoke(app, train).exit_code == 0
    assert runner.invoke(app, ["export", str(run), "--out", str(export)]).exit_code == 0
    assert runner.invoke(app, ["evaluate", str(run), str(data), "--out", str(evaluation)]).exit_code == 0
    before = {path: earlier_output(path) for path in (run, export, evaluation)}

    with monkeypatch.context() as patch:  # the disk fills while the model is written
        patch.setattr(keras.Model, "save", no_space)
        result = runner.invoke(app, [*train, "--force"])
    assert result.exit_code == 1, result.output
    assert "error: Cannot write the/file: No space left on device. Nothing was published" in result.output
    assert f"transfer train --resume {run}" in result.output and "Traceback" not in result.output

    with monkeypatch.context() as patch:  # the SavedModel is written, then labels.txt does not fit
        patch.setattr(artifacts, "write_labels", no_space)
        result = runner.invoke(app, ["export", str(run), "--out", str(export), "--force"])
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output

    with monkeypatch.context() as patch:
        patch.setattr("transfer.evaluation.evaluate.plot_confusion_matrix", no_space)
        result = runner.invoke(app, ["evaluate", str(run), str(data), "--out", str(evaluation), "--force"])
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output

    for path, files in before.items():
        assert earlier_output(path) == files, f"{path} changed"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".run.partial"], (
        "only the failed training's progress is kept, for --resume"
    )


def test_ctrl_c_during_predict_keeps_what_was_scored(digits_run, digits_dir, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    images = sorted(digits_dir.rglob("*.png"))
    for copy in range(20):  # enough images that predict is still running when interrupted: 20 real folders
        folder = many / f"copy-{copy}"  # (links to one folder would be listed once: each real folder once)
        folder.mkdir()
        for index, image in enumerate(images):
            (folder / f"{index:04d}.png").symlink_to(image)
    process = start_command("predict", str(digits_run), str(many), "--format", "csv", "--batch-size", "4")
    rows = [process.stdout.readline() for _ in range(41)]  # the header and ten images of three rows... and more
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    lines = [line for line in (rows + rest.splitlines(keepends=True)) if line.strip()]
    assert lines[0].strip() == "path,rank,label,probability,answer,error,novelty,why_unknown"
    scored = {line.split(",")[0] for line in lines[1:]}
    assert 10 <= len(scored) < 20 * 600, "some, not all, images were scored and every scored row was printed"
    assert all(len(line.split(",")) == 8 for line in lines[1:]), "no row cut short"
    assert "interrupted" in stderr and "Traceback" not in stderr


def test_sigterm_stops_the_server_with_a_word_and_143(digits_run):
    """A service manager's SIGTERM: requests in flight finish, the server says it stopped, 128 + 15."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "transfer.cli", "serve", str(digits_run), "--port", str(port)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{digits_run.name}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "stopped:" in stderr and "SIGTERM" in stderr and "Traceback" not in stderr


def finetune_command(data, source_run, run, *extra: str) -> subprocess.Popen:
    """`transfer train` on `source_run`'s backbone: the logistic head, then many fine-tuning epochs."""
    return start_training(str(data), "--weights", str(source_run), "--finetune-epochs", str(EPOCHS), "--patience",
                          str(EPOCHS), "--no-augment", "--batch-size", "8", "--out", str(run), *extra)


def interrupted(process: subprocess.Popen, signals: int = 1) -> tuple[float, str]:
    """Sends Ctrl-C `signals` times; returns the seconds from the first to the exit, and stderr."""
    import time

    sent = time.monotonic()
    for _ in range(signals):
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=120)
    return time.monotonic() - sent, stderr


def test_ctrl_c_during_fine_tuning_ends_at_once_with_130_and_publishes_nothing(digits_dir, digits_run, tmp_path):
    """Ctrl-C at three moments of a two-stage run: as fine-tuning starts, after an epoch of it, and
    twice in a row: each time 130 within seconds, nothing published, the backups kept."""
    import time

    # As the fine-tuning stage starts (its first epoch, as "Epoch 2/" of the run prints).
    run = tmp_path / "run"
    process = finetune_command(digits_dir, digits_run, run)
    backup = layout.partial_dir(run) / "stages" / "finetune" / "backup"
    deadline = time.monotonic() + 180
    while not (layout.partial_dir(run) / "stages" / "finetune").is_dir() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    seconds, stderr = interrupted(process)
    assert process.returncode == 130, stderr
    assert seconds < 15, f"{seconds:.1f} s from Ctrl-C to the exit"
    assert "Traceback" not in stderr and "SystemError" not in stderr and "interrupted: Training interrupted" in stderr
    assert not run.exists() and (layout.partial_dir(run) / "stages" / "logistic" / layout.HISTORY).is_file()

    # After a fine-tuning epoch: the backup of that epoch is kept, and --resume goes on from it. The
    # first part may have completed epochs before its Ctrl-C took effect: wait for one more than those
    # (a Ctrl-C before the resumed process has started its Python would only test the shell).
    record = backup / "training_metadata.json"
    before = json.loads(record.read_text())["epoch"] if record.is_file() else 0
    process = start_training("--resume", str(run))
    done = wait_for_epoch(process, backup, before + 1)
    seconds, stderr = interrupted(process)
    assert process.returncode == 130 and seconds < 15, (seconds, stderr)
    assert not run.exists() and json.loads((backup / "training_metadata.json").read_text())["epoch"] >= done

    # Twice in a row: the second ends the process at once, the backups still whole.
    process = start_training("--resume", str(run))
    wait_for_epoch(process, backup, done + 1)
    seconds, stderr = interrupted(process, signals=2)
    assert process.returncode == 130 and seconds < 15, (seconds, stderr)
    assert "second Ctrl-C" in stderr or "interrupted: Training interrupted" in stderr
    assert not run.exists()
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / layout.MODEL).is_file()


class _InterruptWhenCollected:
    """Sends this process Ctrl-C from its `__del__`: where the interrupt landed in the report (a
    KeyboardInterrupt raised in a `__del__`, or inside a C call, is printed and dropped)."""

    def __del__(self):
        import os

        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # Python runs the handler here, inside __del__
            pass


@pytest.mark.parametrize("moment", ["in a batch", "as the run is measured"])
def test_a_ctrl_c_that_lands_inside_a_del_still_stops_the_run(tmp_path, monkeypatch, moment):
    """Before, the KeyboardInterrupt was raised wherever the main thread was; in a `__del__` Python
    printed it and dropped it, and training ran on and published the run (exit 0)."""
    from tests.helpers import image_folder
    from transfer.training import publish, stages

    data = image_folder(tmp_path / "data", per_class=8)
    run = tmp_path / "run"

    class Collecting(stages.LearningRateLog):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                _InterruptWhenCollected()  # made and collected at once

    def calibrate(*args, _original=publish.calibrate, **kwargs):
        _InterruptWhenCollected()
        return _original(*args, **kwargs)

    if moment == "in a batch":
        monkeypatch.setattr(stages, "LearningRateLog", Collecting)
    else:
        monkeypatch.setattr(publish, "calibrate", calibrate)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        result = runner.invoke(app, ["train", str(data), "--backbone", "lenet", "--epochs", "3", "--no-augment",
                                     "--batch-size", "2", "--out", str(run)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and not run.exists()
    assert (layout.partial_dir(run) / "stages" / "scratch").is_dir(), "the progress is kept, for --resume"
    if moment == "as the run is measured":
        assert (layout.partial_dir(run) / layout.CHECKPOINT).is_file()


def test_a_second_ctrl_c_waits_only_for_the_backup_being_written():
    """The first Ctrl-C is raised at the next safe point, not where it lands; a second one ends the
    process with 130, after the backup (a `sigint_deferred` block) in progress is whole."""
    script = """
import os, signal, time
from transfer.core.errors import raise_if_stop_requested, sigint_deferred, stop_at_safe_points
try:
    with stop_at_safe_points():
        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.1)
        print("running on after the first", flush=True)
        raise_if_stop_requested()
except KeyboardInterrupt:
    print("raised at the safe point", flush=True)
with stop_at_safe_points():
    os.kill(os.getpid(), signal.SIGINT); time.sleep(0.1)
    with sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.1)
        print("the backup is finished", flush=True)
    print("not reached", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130, done.stderr
    assert done.stdout.splitlines() == ["running on after the first", "raised at the safe point", "the backup is finished"]
    assert "a second Ctrl-C; stopped at once" in done.stderr and "Traceback" not in done.stderr
