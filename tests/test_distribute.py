"""Training under MirroredStrategy across two logical CPU devices, in a process of its own
(logical devices must be configured before TensorFlow initializes)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_mirrored_strategy_on_two_logical_cpus(digits_dir, tmp_path):
    script = textwrap.dedent(
        f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from transfer.training.options import TrainOptions
        from transfer.training.train import train
        options = TrainOptions(backbone="lenet", epochs=4, augment=False, batch_size=16, strategy="mirrored")
        result = train({str(digits_dir)!r}, {str(tmp_path / "run")!r}, options, verbose=0)
        print(json.dumps(result.metrics))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["strategy_resolved"] == "MirroredStrategy"
    assert config["replicas"] == 2 and config["global_batch_size"] == 32
    assert metrics["val_accuracy"] > 0.5  # learned well above chance (0.1) across both replicas

