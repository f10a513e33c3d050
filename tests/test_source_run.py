"""A run as the backbone of the next: its backbone (a baseline's convolutional layers) under a new head."""

import json

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.helpers import image_folder
from transfer.outputs import artifacts, publishing
from transfer.models.registry import get_backbone
from transfer.models.classifier import build_classifier
from transfer.cli import app
from transfer.core.errors import InvalidOptionError
from transfer.training.options import TrainOptions
from transfer.models.saving import load_run_model

runner = CliRunner()


@pytest.mark.parametrize("name, kept", [("lenet", ["c1", "c3", "c5"]), ("alexnet", ["conv1", "conv2", "conv3", "conv4", "conv5"])])
def test_a_baseline_keeps_its_convolutions_and_gets_new_dense_layers(name, kept):
    spec = get_backbone(name)
    size = 32 if name == "lenet" else 67
    keras.utils.set_random_seed(0)
    source = build_classifier(spec, num_classes=10, image_size=size, weights=None)
    model = build_classifier(spec, num_classes=3, image_size=size, weights=source)
    backbone = model.get_layer(name)
    assert [layer.name for layer in backbone.layers if layer.weights] == kept, "the feature extractor ends at the last convolution"
    for layer in kept:
        for new, old in zip(backbone.get_layer(layer).get_weights(), source.get_layer(name).get_layer(layer).get_weights()):
            np.testing.assert_array_equal(new, old)
    assert not backbone.trainable and model.output_shape == (None, 3)
    # The new backbone computes what the source's layers up to its feature layer compute.
    baseline = source.get_layer(name)
    convolutions = keras.Model(baseline.inputs, baseline.get_layer(spec.feature_layer).output)
    pixels = np.random.default_rng(0).uniform(0, 1, (2, *baseline.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(backbone(pixels, training=False), convolutions(pixels, training=False), rtol=1e-5, atol=1e-6)


def test_the_backbone_and_size_come_from_the_run(digits_run):
    options = TrainOptions(weights=str(digits_run)).resolved()
    assert (options.backbone, options.image_size, options.transfers) == ("lenet", 32, True)
    with pytest.raises(InvalidOptionError, match="--backbone resnet50 differs from the backbone of the run"):
        TrainOptions(backbone="resnet50", weights=str(digits_run)).resolved()
    with pytest.raises(InvalidOptionError, match="--image-size 64 differs from the run"):
        TrainOptions(image_size=64, weights=str(digits_run)).resolved()


@pytest.mark.slow
def test_train_on_a_run_then_fine_tune(digits_run, tmp_path):
    data = image_folder(tmp_path / "small", classes=("circle", "square", "star"), per_class=6)
    run = tmp_path / "small-run"
    result = runner.invoke(app, ["train", str(data), "--weights", str(digits_run), "--finetune-epochs", "1",
                                 "--no-augment", "--out", str(run)])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "lenet" and config["pretrained"] is True and config["transfers"] is True
    assert config["head"] == "logistic" and config["patience"] == {"finetune": 5} and config["val_split"] == 0.2
    assert config["source_run"]["path"] == str(digits_run.resolve())
    assert config["source_run"]["model_sha256"] == publishing.sha256(digits_run / "model.keras")
    history = (run / "history.csv").read_text()
    assert "logistic" in history and "finetune" in history, "LP-FT: the logistic head (the default), then fine-tuning"
    model = load_run_model(artifacts.Run.open(run))
    source = load_run_model(artifacts.Run.open(digits_run))
    assert model.output_shape == (None, 3)
    # The run keeps the stage with the best validation score: after the logistic stage the source's
    # convolutions are untouched; after fine-tuning (the whole backbone unfrozen, at the head's
    # rate) they moved, but stayed close to where they started.
    kept = json.loads((run / "metrics.json").read_text())["best_stage"]
    assert kept in ("logistic", "finetune")
    for layer in ("c1", "c3", "c5"):
        tuned = model.get_layer("lenet").get_layer(layer).get_weights()[0]
        started = source.get_layer("lenet").get_layer(layer).get_weights()[0]
        change = np.linalg.norm(tuned - started) / np.linalg.norm(started)
        assert (change == 0) if kept == "logistic" else (0 < change < 0.5), f"{layer} moved by {change:.3f} of its norm"
    page = runner.invoke(app, ["report", str(run), "--gradcam", "2"])
    assert page.exit_code == 0, page.output
    assert "source run" in (run / "report.html").read_text()
