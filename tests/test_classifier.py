"""Stage 1 changes only the head; stage 2 changes only the unfrozen backbone layers.

Both stages run the same `transfer.models.classifier` functions that `transfer.training.train` uses.
"""

import keras
import numpy as np
import pytest

from transfer.models.registry import get_backbone
from transfer.models.classifier import backbone_layers, build_classifier, freeze_backbone, unfreeze_top
from transfer.core.errors import InvalidOptionError

SPEC = get_backbone("resnet50")


def snapshot(layers):
    """{variable path: value} of every variable (trainable or not, BN moving statistics included)."""
    return {w.path: keras.ops.convert_to_numpy(w).copy() for layer in layers for w in layer.weights}


def changed(before, after):
    return {path for path in before if not np.array_equal(before[path], after[path])}


def fit_once(model, x, y, learning_rate):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32"), rng.integers(0, 2, 16)


# The registry's backbones with BatchNormalization: MobileNetV3-Small, the cheapest, in the quick suite
# (MobileNetV3-Large is built by the same code).
WITH_BATCHNORM = [pytest.param(name, marks=[] if name == "mobilenetv3small" else pytest.mark.slow)
                  for name in ("resnet50", "efficientnetv2b0", "mobilenetv3small")]


@pytest.mark.parametrize("name", WITH_BATCHNORM)
def test_frozen_stage_changes_only_the_head_and_bn_statistics_stay(data, name):
    spec = get_backbone(name)
    keras.utils.set_random_seed(0)
    model = build_classifier(spec, num_classes=2, image_size=32, weights=None)
    backbone = backbone_layers(model, spec)
    bn_statistics = [w.path for l in backbone if isinstance(l, keras.layers.BatchNormalization)
                     for w in l.non_trainable_weights]
    assert bn_statistics, f"{name} has BatchNormalization moving statistics to watch"
    head = [model.get_layer("head")]
    before_backbone, before_head = snapshot(backbone), snapshot(head)

    freeze_backbone(model, spec)
    fit_once(model, *data, learning_rate=0.1)

    assert changed(before_backbone, snapshot(backbone)) == set()
    # MobileNetV3 with random weights gives features near 1e-11: a step moves the head's bias, not its kernel.
    moved = {path for path in before_head if path.endswith("bias")} if name.startswith("mobilenetv3") else set(before_head)
    assert changed(before_head, snapshot(head)) == moved


@pytest.mark.slow  # ResNet50
def test_finetune_stage_changes_only_the_unfrozen_layers(data):
    keras.utils.set_random_seed(0)
    model = build_classifier(SPEC, num_classes=2, image_size=32, weights=None)
    layers = backbone_layers(model, SPEC)
    top = 12
    unfrozen = unfreeze_top(model, SPEC, top)

    expected = {w.path for l in layers[-top:] if not isinstance(l, keras.layers.BatchNormalization)
                for w in l.weights}
    assert unfrozen and expected, "the top layers include convolutions"
    assert {w.path for w in model.trainable_weights} >= expected
    before = snapshot(layers)
    fit_once(model, *data, learning_rate=0.1)

    assert changed(before, snapshot(layers)) == expected  # BN statistics and lower layers untouched


@pytest.mark.slow  # ResNet50
def test_unfreeze_all_keeps_batchnorm_frozen():
    model = build_classifier(SPEC, num_classes=2, image_size=32, weights=None)
    unfreeze_top(model, SPEC, None)
    layers = backbone_layers(model, SPEC)
    assert all(not l.trainable for l in layers if isinstance(l, keras.layers.BatchNormalization))
    assert all(l.trainable for l in layers if isinstance(l, keras.layers.Conv2D))


@pytest.mark.slow  # ResNet50
def test_unfreeze_more_layers_than_the_backbone_has():
    model = build_classifier(SPEC, num_classes=2, image_size=32, weights=None)
    count = len(backbone_layers(model, SPEC))
    with pytest.raises(InvalidOptionError, match=f"between 1 and {count}"):
        unfreeze_top(model, SPEC, count + 1)


@pytest.mark.slow  # was slow with the module
def test_the_inference_model_has_no_augmentation_and_computes_in_float32(data):
    """A mixed-precision LeNet-5 (float16 layers nested in its backbone) with augmentation: the
    exporters' copy has neither, the same weights, and the float32 model's outputs."""
    from transfer.data.augmentation import build_augmentation
    from transfer.models.classifier import inference_model

    x, _ = data
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(1)
        model = build_classifier(get_backbone("lenet"), 3, 32, None, augmentation=build_augmentation("horizontal", 1))
    finally:
        keras.config.set_dtype_policy(previous)
    assert any(layer.dtype_policy.name == "mixed_float16" for layer in model.get_layer("lenet").layers)
    keras.utils.set_random_seed(1)
    reference = build_classifier(get_backbone("lenet"), 3, 32, None)  # float32, no augmentation
    reference.set_weights([w for w in model.get_weights() if w.dtype != np.uint32])  # seed states left out

    exported = inference_model(model)
    names = [layer.name for layer in exported.layers]
    assert "augmentation" in names and not exported.get_layer("augmentation").weights  # a pass-through stands in
    assert {layer.dtype_policy.name for layer in exported.get_layer("lenet").layers} == {"float32"}
    np.testing.assert_allclose(exported(x), reference(x, training=False), atol=1e-6)
    np.testing.assert_allclose(exported(x), model(x, training=False), atol=2e-2)  # float16 rounding
