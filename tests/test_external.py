"""Backbones from outside the registry: a Keras model file (`--backbone PATH.keras`) and a keras-hub
preset (`--backbone keras-hub:PRESET`). Tiny models the tests write themselves; the real
EfficientNet-Lite0 of ../shared where pretrained features matter."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.helpers import ROOT, image_folder
from transfer.outputs import publishing
from transfer.models.registry import get_backbone, run_backbone
from transfer.models.classifier import build_classifier, unfreeze_top
from transfer.cli import app
from transfer.core.errors import InvalidOptionError, ModelLoadError
from transfer.training.features import feature_extractor
from transfer.training.options import TrainOptions
from transfer.training.train import train

runner = CliRunner()
LITE0 = ROOT.parent / "shared" / "data" / "efficientnet_lite0"


def small_cnn(size=32, classes=5, head=True, dropout=True, name="colleague"):
    """A CNN from images to a pooled vector, with its own softmax classifier when `head`."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if head:
        if dropout:
            x = keras.layers.Dropout(0.3, name="drop")(x)
        x = keras.layers.Dense(classes, activation="softmax", name="classes")(x)
    return keras.Model(inputs, x, name=name)


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("files") / "colleague.keras"
    small_cnn().save(path)
    return path


def test_a_file_ending_in_a_classifier_is_cut_below_it_and_its_pooling(classifier_file):
    spec = get_backbone(str(classifier_file))
    assert (spec.input_size, spec.max_input_size, spec.preprocess_mode) == (32, 32, "none")
    assert "classes" in spec.note and "softmax" in spec.note
    model = build_classifier(spec, num_classes=3, image_size=32, weights=None)
    backbone = model.get_layer("backbone")
    assert backbone.output_shape == (None, 16, 16, 12), "the feature map below the file's own pooling"
    assert not {"classes", "drop", "gap"} & {layer.name for layer in backbone.layers}
    # Independently: the file's own pooled features, below its dropout and softmax.
    original = keras.saving.load_model(classifier_file)
    pooled = keras.Model(original.inputs, original.get_layer("gap").output)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(feature_extractor(model, spec).predict(pixels, verbose=0), pooled.predict(pixels, verbose=0), atol=1e-5)
    assert model.output_shape == (None, 3)


def test_a_file_that_returns_a_vector_is_a_backbone_too(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalMaxPooling2D(name="max")(x)
    path = tmp_path / "vector.keras"
    keras.Model(inputs, keras.layers.Dense(6, activation="relu", name="embedding")(x)).save(path)
    spec = get_backbone(str(path))
    assert (spec.input_size, spec.max_input_size, spec.note) == (224, None, ""), "any size: 224 unless --image-size"
    model = build_classifier(spec, num_classes=2, image_size=48, weights=None)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    expected = keras.saving.load_model(path).predict(pixels, verbose=0)
    np.testing.assert_allclose(feature_extractor(model, spec).predict(pixels, verbose=0), expected, atol=1e-5)


def test_backbone_layer_chooses_the_features(classifier_file):
    spec = get_backbone(str(classifier_file))
    model = build_classifier(spec, num_classes=2, image_size=32, weights=None, backbone_layer="conv1")
    assert model.get_layer("backbone").output_shape == (None, 32, 32, 8)
    with pytest.raises(ModelLoadError, match="--backbone-layer nope is not a layer"):
        build_classifier(spec, num_classes=2, image_size=32, weights=None, backbone_layer="nope")


def test_unfreezing_counts_the_files_layers_and_keeps_batchnorm_frozen(classifier_file):
    spec = get_backbone(str(classifier_file))
    model = build_classifier(spec, num_classes=2, image_size=32, weights=None)
    names = unfreeze_top(model, spec, 1)
    assert names == ["conv2"]
    unfreeze_top(model, spec, None)
    assert not model.get_layer("backbone").get_layer("bn1").trainable
    with pytest.raises(InvalidOptionError, match="between 1 and 4"):  # scale, conv1, bn1, conv2
        unfreeze_top(model, spec, 5)


def test_a_lambda_layer_is_refused_in_safe_mode(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(x)).save(path)
    with pytest.raises(ModelLoadError, match="Lambda layer"):
        build_classifier(get_backbone(str(path)), num_classes=2, image_size=16, weights=None)


@pytest.mark.parametrize("contents, expected", [
    (None, "no such file"),
    (b"not a zip", "is not a Keras 3 model file"),
])
def test_bad_files_get_one_line(tmp_path, contents, expected):
    path = tmp_path / "model.keras"
    if contents is not None:
        path.write_bytes(contents)
    result = runner.invoke(app, ["train", str(tmp_path), "--backbone", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output


def test_options_a_file_cannot_take(classifier_file, tmp_path):
    base = TrainOptions(backbone=str(classifier_file))
    with pytest.raises(InvalidOptionError, match="--image-size must be 32, the input size saved in"):
        TrainOptions(backbone=str(classifier_file), image_size=64).resolved()
    with pytest.raises(InvalidOptionError, match="brings its own weights"):
        TrainOptions(backbone=str(classifier_file), weights="imagenet").resolved()
    with pytest.raises(InvalidOptionError, match="--preprocess applies to a model file"):
        TrainOptions(backbone="resnet50", preprocess="tf").resolved()
    with pytest.raises(InvalidOptionError, match="--backbone-layer conv1 chooses the features of a model file"):
        TrainOptions(backbone="resnet50", backbone_layer="conv1").resolved()
    resolved = base.resolved()
    assert resolved.backbone == str(classifier_file.resolve()) and resolved.weights == resolved.backbone
    assert (resolved.image_size, resolved.lr, resolved.optimizer) == (32, 1e-3, "adam"), "a new head's defaults"


def test_a_run_on_a_file_is_self_contained(classifier_file, tmp_path):
    data = image_folder(tmp_path / "data", per_class=6)
    copy = tmp_path / "copy.keras"
    copy.write_bytes(classifier_file.read_bytes())
    result = train(data, tmp_path / "run", TrainOptions(backbone=str(copy), epochs=1, finetune_epochs=1, augment=False), verbose=0)
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["backbone"] == str(copy.resolve())
    assert config["backbone_sha256"] == publishing.sha256(classifier_file)
    copy.unlink()  # the file is not needed any more
    assert run_backbone(config).name == "backbone"
    predicted = runner.invoke(app, ["predict", str(result.run_dir), str(data / "ants"), "--format", "csv"])
    assert predicted.exit_code == 0, predicted.output
    assert predicted.output.count("ants/") >= 6
    # ... and the run is a backbone for the next one, without the file either.
    reused = TrainOptions(weights=str(result.run_dir), epochs=1).resolved()
    assert reused.backbone == str(copy.resolve()) and reused.image_size == 32
    again = train(data, tmp_path / "again", TrainOptions(weights=str(result.run_dir), epochs=1, augment=False), verbose=0)
    reused_config = json.loads((again.run_dir / "config.json").read_text())
    assert reused_config["backbone_sha256"] == config["backbone_sha256"], "the file's identity carries over"
    assert reused_config["weights"] == str(result.run_dir.resolve())
    np.testing.assert_array_equal(
        again.model.get_layer("backbone").get_layer("conv2").get_weights()[0],
        result.model.get_layer("backbone").get_layer("conv2").get_weights()[0],
    )


@pytest.fixture(scope="module")
def hub_preset(tmp_path_factory) -> Path:
    """A tiny keras-hub ResNet preset with its image converter, saved locally (random weights)."""
    import keras_hub  # the hub extra, which the dev extra installs
    keras.utils.set_random_seed(2)
    folder = tmp_path_factory.mktemp("hub") / "tiny_resnet"
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3),
    ).save_to_preset(str(folder))
    keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=[0.02, 0.03, 0.04], offset=[-1.0, -2.0, -3.0]).save_to_preset(str(folder))
    return folder


def test_a_keras_hub_preset_brings_its_preprocessing(hub_preset, tmp_path):
    name = f"keras-hub:{hub_preset}"
    spec = get_backbone(name)
    assert (spec.input_size, spec.preprocess_mode) == (32, "keras-hub"), "the size of the preset's image converter"
    model = build_classifier(spec, num_classes=2, image_size=32, weights=None)
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    import keras_hub

    hub = keras_hub.models.Backbone.from_preset(str(hub_preset))
    expected = hub.predict(pixels * np.array([0.02, 0.03, 0.04]) + np.array([-1.0, -2.0, -3.0]), verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose(feature_extractor(model, spec).predict(pixels, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_an_unreachable_preset_names_it_and_the_way_to_get_it(tmp_path, monkeypatch):
    from keras_hub.src.utils import preset_utils

    def offline(preset, path):
        raise ConnectionError(f"HTTPSConnectionPool(host='api.kaggle.com'): Name or service not known ({preset}/{path})")

    monkeypatch.setattr(preset_utils, "get_file", offline)
    data = str(image_folder(tmp_path / "d"))
    result = runner.invoke(app, ["train", data, "--backbone", "keras-hub:resnet_18_imagenet", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "Could not load keras-hub preset 'resnet_18_imagenet'" in result.output
    assert "save_to_preset" in result.output and "keras-hub:DIR" in result.output
    missing = runner.invoke(app, ["train", data, "--backbone", f"keras-hub:{tmp_path / 'missing'}", "--out", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "no preset folder" in missing.output, "a folder that is not there is a typo, not the network"


def test_compare_takes_files_beside_registry_names(classifier_file, tmp_path):
    data = image_folder(tmp_path / "data", per_class=6)
    other = tmp_path / "other.keras"
    small_cnn(head=False, name="other").save(other)
    result = runner.invoke(app, [
        "compare", str(data), "--backbones", f"lenet,{classifier_file},{other}", "--epochs", "1", "--out", str(tmp_path / "cmp"),
    ])
    assert result.exit_code == 0, result.output
    board = (tmp_path / "cmp" / "leaderboard.csv").read_text()
    assert "colleague" in board and "other" in board and "lenet" in board
    assert (tmp_path / "cmp" / "runs" / "colleague" / "model.keras").is_file()
    import pandas as pd

    rows = pd.read_csv(tmp_path / "cmp" / "leaderboard.csv").set_index("backbone")
    best_file = rows.drop(index="lenet")["val_accuracy"].max()
    said = json.loads((tmp_path / "cmp" / "config.json").read_text())["verdict"]
    assert said.startswith("Transfer hurt here" if rows.loc["lenet", "val_accuracy"] > best_file else "Transfer helped here")
    assert said in result.output
    twice = runner.invoke(app, ["compare", str(data), "--backbones", f"{classifier_file},{classifier_file}", "--out", str(tmp_path / "c2")])
    assert twice.exit_code == 2 and "more than once" in twice.output


@pytest.mark.slow
def test_the_real_lite0_classifier_file_gives_the_notop_files_features(hymenoptera):
    """The shared EfficientNet-Lite0 with its ImageNet head, cut below it, equals the file without its top."""
    with_top, notop = get_backbone(str(LITE0 / "efficientnet_lite0_imagenet.keras")), get_backbone(str(LITE0 / "efficientnet_lite0_notop.keras"))
    assert with_top.note and not notop.note
    from transfer.training.features import extract_features

    images = sorted(str(p) for p in (hymenoptera / "val" / "ants").iterdir())[:4]
    features = [
        extract_features(feature_extractor(build_classifier(spec, num_classes=2, image_size=224, weights=None), spec), images, 4)
        for spec in (with_top, notop)
    ]
    np.testing.assert_allclose(features[0], features[1], atol=1e-5)
    assert features[0].shape == (4, 1280)


@pytest.mark.slow
def test_real_pretrained_features_learn_ants_and_bees_in_a_few_epochs(hymenoptera, tmp_path):
    """20 photos per class and the frozen Lite0: well above chance on 40 validation photos it did not train on."""
    from tests.helpers import few_photos

    data = few_photos(hymenoptera / "train", tmp_path / "train", per_class=20)
    val = few_photos(hymenoptera / "val", tmp_path / "val", per_class=20)
    result = train(data, tmp_path / "run", TrainOptions(
        backbone=str(LITE0 / "efficientnet_lite0_notop.keras"), val_dir=str(val), epochs=5, head="logistic"), verbose=0)
    assert result.metrics["val_accuracy"] >= 0.85, result.metrics


def test_the_verdict_names_the_best_of_each_side():
    from transfer.selection.compare import transfer_verdict

    assert transfer_verdict({"a": (True, 0.6), "b": (True, 0.65), "lenet": (False, 0.79)}) == (
        "Transfer hurt here: lenet trained from scratch (0.790) beat every transferred backbone (best: b, 0.650) on the same images."
    )
    assert transfer_verdict({"a": (True, 0.9), "lenet": (False, 0.79), "c": (True, None)}).startswith("Transfer helped here: a (0.900)")
    assert transfer_verdict({"a": (True, 0.9), "b": (True, 0.8)}) is None, "no side trained from scratch: nothing to say"


def test_a_model_whose_output_is_not_image_features_is_refused(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    path = tmp_path / "sequence.keras"
    keras.Model(inputs, keras.layers.Reshape((14 * 14, 4), name="tokens")(x)).save(path)
    with pytest.raises(ModelLoadError, match=r"features have shape \(None, 196, 4\).*--backbone-layer NAME"):
        build_classifier(get_backbone(str(path)), num_classes=2, image_size=16, weights=None)
    model = build_classifier(get_backbone(str(path)), num_classes=2, image_size=16, weights=None, backbone_layer="conv")
    assert model.get_layer("backbone").output_shape == (None, 14, 14, 4), "the advice works"


def test_lr_find_sweeps_the_dense_head_on_a_files_features(classifier_file, tmp_path):
    """lr-find takes a model file as train does; the default head (logistic) has no rate, so the
    sweep is of the dense head on the file's pooled features."""
    from transfer.training.lr_find import lr_find

    data = image_folder(tmp_path / "data", per_class=6)
    found = lr_find(data, tmp_path / "lr", TrainOptions(backbone=str(classifier_file)), steps=20, end_lr=1.0)
    assert "colleague.keras's features" in found.trained and 1e-7 <= found.suggestion <= 1.0
    assert (tmp_path / "lr" / "lr_find.png").is_file() and len(found.table) <= 20


def _token_preset(folder: Path, family: str) -> Path:
    """A tiny keras-hub ViT (a class token) or DINOv2 (a class token and two register tokens) preset
    with its image converter, saved locally (random weights): 16 patch tokens of 8 channels."""
    import keras_hub

    keras.utils.set_random_seed(4)
    if family == "vit":
        keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=8,
                                     mlp_dim=16).save_to_preset(str(folder))
        converter = keras_hub.layers.ViTImageConverter
    else:
        keras_hub.models.DINOV2Backbone(patch_size=8, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=16,
                                        num_register_tokens=2, image_shape=(32, 32, 3),
                                        position_embedding_shape=(32, 32, 3)).save_to_preset(str(folder))
        converter = keras_hub.layers.DINOV2ImageConverter
    converter(image_size=(32, 32), scale=[0.02, 0.03, 0.04], offset=[-1.0, -2.0, -3.0]).save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="module")
def token_presets(tmp_path_factory) -> dict[str, Path]:
    return {family: _token_preset(tmp_path_factory.mktemp("tokens") / family, family) for family in ("vit", "dinov2")}


@pytest.mark.parametrize("family, pooling, expected", [
    ("vit", "auto", "cls"), ("vit", "mean", "mean"), ("dinov2", "auto", "cls"), ("dinov2", "mean", "mean"),
])
def test_a_preset_that_returns_tokens_is_pooled(token_presets, family, pooling, expected):
    """ViT and DINOv2 have a class token (auto takes it); mean averages the patch tokens, leaving out
    the class token and DINOv2's register tokens. Checked against the backbone's own tokens."""
    import keras_hub

    preset = token_presets[family]
    spec = get_backbone(f"keras-hub:{preset}")
    model = build_classifier(spec, num_classes=2, image_size=32, weights=None, pooling=pooling)
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    hub = keras_hub.models.Backbone.from_preset(str(preset))
    tokens = keras.ops.convert_to_numpy(hub(pixels * np.array([0.02, 0.03, 0.04]) + np.array([-1.0, -2.0, -3.0])))
    prefix = 3 if family == "dinov2" else 1  # class token, then DINOv2's two register tokens
    assert tokens.shape == (2, prefix + 16, 8)
    wanted = tokens[:, 0] if expected == "cls" else tokens[:, prefix:].mean(axis=1)
    np.testing.assert_allclose(feature_extractor(model, spec).predict(pixels, verbose=0), wanted, rtol=1e-4, atol=1e-5)


def test_pooling_is_recorded_and_kept_by_the_saved_run(token_presets, tmp_path):
    from transfer.outputs.artifacts import Run
    from transfer.training.features import load_run_model

    data = image_folder(tmp_path / "data", per_class=4)
    result = runner.invoke(app, ["train", str(data), "--backbone", f"keras-hub:{token_presets['dinov2']}", "--pooling", "mean",
                                 "--no-augment", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    run = Run.open(tmp_path / "run")
    assert run.config()["pooling"] == "mean"
    backbone = load_run_model(run).get_layer("backbone")
    assert backbone.get_layer("token_pool").__class__.__name__ == "GlobalAveragePooling1D"
    assert tuple(backbone.get_layer("patch_tokens").get_config()["cropping"]) == (3, 0), "class and register tokens left out"


def test_siglip_is_pooled_by_its_image_towers_own_head_or_the_token_mean(tmp_path):
    """SigLIP (an image and a text tower): the image tower alone, pooled by its attention-pooling head
    (auto) or the mean of its normalised patch tokens; `cls` is refused (it has no class token)."""
    import keras_hub

    keras.utils.set_random_seed(6)
    vision = keras_hub.models.SigLIPVisionEncoder(patch_size=8, hidden_dim=8, num_layers=1, num_heads=2,
                                                  intermediate_dim=16, image_shape=(32, 32, 3))
    text = keras_hub.models.SigLIPTextEncoder(vocabulary_size=16, embedding_dim=8, hidden_dim=8, num_layers=1, num_heads=2,
                                              intermediate_dim=16, max_sequence_length=4)
    keras_hub.models.SigLIPBackbone(vision, text).save_to_preset(str(tmp_path / "siglip"))
    keras_hub.layers.SigLIPImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0).save_to_preset(str(tmp_path / "siglip"))
    spec = get_backbone(f"keras-hub:{tmp_path / 'siglip'}")
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    tower = keras_hub.models.Backbone.from_preset(str(tmp_path / "siglip")).vision_encoder
    scaled = pixels / 127.5 - 1.0
    tokens = keras.Model(tower.inputs, tower.get_layer(f"{tower.name}_post_layer_norm").output)(scaled)
    for pooling, wanted in (("auto", tower(scaled)), ("mean", keras.ops.mean(tokens, axis=1))):
        model = build_classifier(spec, num_classes=2, image_size=32, weights=None, pooling=pooling)
        np.testing.assert_allclose(feature_extractor(model, spec).predict(pixels, verbose=0), keras.ops.convert_to_numpy(wanted),
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelLoadError, match="--pooling cls takes a class token; the image tower of .* has none"):
        build_classifier(spec, num_classes=2, image_size=32, weights=None, pooling="cls")


def test_a_vit_classifier_loads_again_from_its_file(token_presets, tmp_path):
    """keras-hub's ViT embedding does not reload from its own configuration; the run's loader repairs it."""
    from transfer.models.saving import load_keras_model

    model = build_classifier(get_backbone(f"keras-hub:{token_presets['vit']}"), num_classes=2, image_size=32, weights=None)
    model.save(tmp_path / "model.keras")
    with pytest.raises(Exception, match="num_patches"):  # the defect itself: Keras' own loader fails
        keras.saving.load_model(tmp_path / "model.keras", compile=False)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    loaded = load_keras_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), rtol=1e-5, atol=1e-6)


def test_pooling_of_a_backbone_without_tokens_is_one_line(hub_preset, tmp_path):
    data = str(image_folder(tmp_path / "d"))
    registry = runner.invoke(app, ["train", data, "--weights", "none", "--image-size", "32", "--pooling", "cls", "--out", str(tmp_path / "r")])
    assert registry.exit_code == 2 and "--pooling cls pools the tokens of a keras-hub backbone" in registry.output
    assert "resnet50 returns a feature map. Drop --pooling." in registry.output and "Traceback" not in registry.output
    with pytest.raises(ModelLoadError, match=r"--pooling mean pools a token sequence .* returns features of shape \(None, None, None, 16\)"):
        build_classifier(get_backbone(f"keras-hub:{hub_preset}"), num_classes=2, image_size=32, weights=None, pooling="mean")
