"""--mixed-precision: float16 compute, float32 softmax, and the global policy left as it was."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_mixed_precision_run_keeps_float32_outputs_and_restores_the_policy(digits_dir, tmp_path):
    import keras

    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    options = TrainOptions(backbone="lenet", epochs=1, augment=False, mixed_precision=True)
    result = train(digits_dir, tmp_path / "run", options, verbose=0)
    assert keras.config.dtype_policy().name == "float32"
    model = keras.saving.load_model(result.run_dir / "model.keras", compile=False)
    lenet = model.get_layer("lenet")
    assert lenet.get_layer("c1").dtype_policy.name == "mixed_float16"
    assert lenet.get_layer("predictions").dtype_policy.name == "float32"
    assert model.output.dtype == "float32"
    assert result.metrics["val_accuracy"] > 0.3  # learned above chance (0.1) in one epoch
    assert json.loads((result.run_dir / "config.json").read_text())["mixed_precision"] is True
