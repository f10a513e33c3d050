"""Two workers on 127.0.0.1 under MultiWorkerMirroredStrategy, each configured by its TF_CONFIG.

Each worker is a process of its own, as on two machines: it runs `transfer train` (or the library)
with the same arguments and its own TF_CONFIG.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ROOT, wait_for_epoch
from transfer.outputs import layout

pytestmark = [pytest.mark.slow, pytest.mark.multiworker]


def tf_configs(count: int) -> list[str]:
    """One TF_CONFIG per worker of a cluster on free 127.0.0.1 ports."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(count)]


def start(argv: list[str], tf_config: str, log) -> subprocess.Popen:
    env = {**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def finish(processes, logs, timeout=300) -> list[str]:
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
    return [log.read_text() for log in logs]


WORKER = textwrap.dedent(
    """
    import sys, numpy as np
    from transfer.core.progress import Reporter
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    class Printer(Reporter):
        def message(self, text):
            print(text, flush=True)

    data, out, weights = sys.argv[1:4]
    options = TrainOptions(backbone="lenet", epochs=2, augment=False, batch_size=16, seed=5)
    result = train(data, out, options, reporter=Printer(), verbose=0)
    np.savez(weights, *result.model.get_weights())
    """
)


def test_two_workers_train_identically_and_only_the_chief_writes(tmp_path, digits_dir):
    run = tmp_path / "runs" / "lenet"
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    processes = [
        start(["-c", WORKER, str(digits_dir), str(run), str(tmp_path / f"weights-{i}.npz")], config, log.open("w"))
        for i, (config, log) in enumerate(zip(tf_configs(2), logs))
    ]
    printed = finish(processes, logs)
    assert [p.returncode for p in processes] == [0, 0], "\n\n".join(o[-3000:] for o in printed)

    chief, other = np.load(tmp_path / "weights-0.npz"), np.load(tmp_path / "weights-1.npz")
    assert chief.files == other.files and len(chief.files) == 10
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name])

    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["lenet"], "no worker folder left behind"
    config = json.loads((run / layout.CONFIG).read_text())
    assert config["strategy_resolved"] == "MultiWorkerMirroredStrategy"
    assert config["replicas"] == 2 and config["global_batch_size"] == 32
    assert "on 2 workers (this is worker 0, the chief)" in printed[0]
    assert "on 2 workers (this is worker 1, the non-chief)" in printed[1]
    metrics = json.loads((run / layout.METRICS).read_text())
    assert metrics["num_train"] + metrics["num_val"] == 600 and metrics["val_accuracy"] > 0.5


def test_a_killed_worker_stops_the_other_clearly_and_both_resume(tmp_path, digits_dir):
    run = tmp_path / "runs" / "lenet"
    epochs = "5"
    argv = ["-m", "transfer.cli", "train", str(digits_dir), "--backbone", "lenet", "--epochs", epochs, "--patience", epochs,
            "--no-augment", "--batch-size", "16", "--out", str(run)]
    configs = tf_configs(2)
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    processes = [start(argv, config, log.open("w")) for config, log in zip(configs, logs)]
    wait_for_epoch(processes[0], layout.partial_dir(run) / "stages" / "scratch" / "backup", 2)
    processes[1].send_signal(signal.SIGKILL)
    printed = finish(processes[:1], logs[:1], timeout=240)
    assert processes[0].returncode == 1, printed[0][-3000:]
    assert "error: A worker of the cluster stopped or cannot be reached" in printed[0]
    assert f"transfer train --resume {run}" in printed[0] and "Traceback" not in printed[0]
    assert not run.exists(), "nothing published by a failed run"

    # Both start again with --resume and the same TF_CONFIG: on from the last backup, to the end.
    logs = [tmp_path / f"resumed-{i}.log" for i in range(2)]
    resumed = [start(["-m", "transfer.cli", "train", "--resume", str(run)], config, log.open("w")) for config, log in zip(configs, logs)]
    printed = finish(resumed, logs)
    assert [p.returncode for p in resumed] == [0, 0], "\n\n".join(o[-3000:] for o in printed)
    assert "restoring the weights and optimizer of the last completed epoch" in printed[0]
    history = pd.read_csv(run / layout.HISTORY)
    assert history["epoch"].tolist() == list(range(1, int(epochs) + 1))
    assert json.loads((run / layout.METRICS).read_text())["resumed"] is True
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["lenet"]


def test_tf_config_roles_and_errors(monkeypatch):
    import pytest

    from transfer.training.distribute import cluster_task, worker_index
    from transfer.core.errors import InvalidOptionError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_task() is None and worker_index() is None
    cluster = {"worker": ["a:1", "b:1"]}
    for task, expected in [({"type": "worker", "index": 0}, None), ({"type": "worker", "index": 1}, 1)]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert worker_index() == expected
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:1"], **cluster}, "task": {"type": "worker", "index": 0}}))
    assert worker_index() == 0  # with a chief task, worker 0 is not the chief
    for bad in ("not json", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', '{"task": {}}'):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(InvalidOptionError, match="TF_CONFIG is not a valid cluster description"):
            cluster_task()
