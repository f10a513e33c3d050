"""A full classifier: raw pixels in, class probabilities out; and its training stages.

Layout, for a pretrained backbone:

    image [0, 255] -> augmentation (training only) -> preprocess -> backbone(training=False)
                   -> avg_pool -> head: head_dropout -> [head_dense] -> predictions (softmax)

for a from-scratch baseline, which carries its own classifier:

    image [0, 255] -> augmentation (training only) -> preprocess -> lenet | alexnet

and for a baseline whose convolutional layers come from an earlier run (`source`), the layers up to
its registry `feature_layer` under a new head, as the pretrained backbones:

    image [0, 255] -> augmentation (training only) -> preprocess -> lenet | alexnet (C1..C5 | conv1..pool5,
                      training=False) -> flatten_features -> head

The backbone is called with `training=False`, and its BatchNormalization layers stay frozen in
both stages. The second is what guarantees inference mode in Keras 3: a functional model passes the
`training` flag of its own call down to every layer, overriding the `training=False` recorded at
construction, but a BatchNormalization layer with `trainable=False` always normalizes with its
moving (ImageNet) statistics and never updates them.
"""

from __future__ import annotations

import keras

from transfer.data.augmentation import AUGMENTATION
from transfer.models.registry import BackboneSpec, build_backbone
from transfer.core.errors import InvalidOptionError, ModelLoadError
from transfer.models.heads import HeadSpec, classification_head
from transfer.data.preprocessing import Preprocess


#: The layer between the backbone and the head: global average pooling for the pretrained backbones,
#: flattening for a baseline's convolutional layers (AlexNet's pool5 keeps its 6x6 layout, as FC6 reads it).
POOLING_LAYERS = ("avg_pool", "flatten_features")


def build_classifier(
    spec: BackboneSpec,
    num_classes: int,
    image_size: int,
    weights: str | keras.Model | None,
    head: HeadSpec = HeadSpec(),
    augmentation: keras.Layer | None = None,
    backbone_layer: str | None = None,
    pooling: str = "auto",
) -> keras.Model:
    """Returns an uncompiled classifier; a pretrained or transferred backbone starts frozen. It ends
    in a softmax over the classes, or for `head.multi_label` in one sigmoid per label.

    Args:
        weights: where the backbone's weights come from: `"imagenet"`, a weights file, `None`
            (random), or a model trained by `transfer train` whose backbone (for a baseline: its
            layers up to `spec.feature_layer`) is reused here, weights included, under a new head.
        backbone_layer: for a model file, the layer whose output are the features (`None`: below
            its classifier, see `transfer.models.external`).
        pooling: for a backbone that returns tokens, how they become one feature vector
            (`transfer.models.external.POOLINGS`).
    """
    source, weights = (weights, None) if isinstance(weights, keras.Model) else (None, weights)
    activation = "sigmoid" if head.multi_label else "softmax"
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = augmentation(inputs) if augmentation is not None else inputs
    if not spec.pretrained and source is None:
        x = Preprocess(spec.preprocess_mode, grayscale=spec.grayscale, dtype="float32", name="preprocess")(x)
        return keras.Model(inputs, build_backbone(spec, image_size, None, num_classes, activation)(x), name=f"{spec.name}_classifier")
    backbone, preprocess = _backbone_and_preprocessing(spec, image_size, weights, source, (backbone_layer, pooling))
    x = Preprocess(**preprocess, dtype="float32", name="preprocess")(x)
    backbone.trainable = False
    x = backbone(x, training=False)
    pool = keras.layers.GlobalAveragePooling2D(name="avg_pool") if spec.pretrained else keras.layers.Flatten(name="flatten_features")
    x = pool(x)
    outputs = classification_head(x.shape[-1], num_classes, head.dropout_rate, head.units, activation)(x)
    return keras.Model(inputs, outputs, name=f"{spec.name}_classifier")


def _backbone_and_preprocessing(spec: BackboneSpec, image_size: int, weights: str | None, source: keras.Model | None,
                                features: tuple[str | None, str]) -> tuple[keras.Model, dict]:
    """The backbone to freeze under the new head, and the arguments of its `Preprocess` layer.
    `features`: a model file's `backbone_layer`, and the `pooling` of tokens."""
    from transfer.models import external as external

    backbone_layer, pooling = features
    if source is not None and spec.source is not None:  # the source run's own copy: the file is not read
        reused = source.get_layer(spec.name)
        backbone = keras.models.clone_model(reused)
        backbone.set_weights(reused.get_weights())
        config = source.get_layer("preprocess").get_config()
        return backbone, {key: config.get(key) for key in ("mode", "grayscale", "scale", "offset")}
    if spec.source is not None and spec.source.startswith(external.HUB_PREFIX):
        backbone, scale, offset = external.load_hub_backbone(spec.source, pooling)
        return backbone, {"mode": "keras-hub", "scale": scale, "offset": offset}
    if spec.source is not None:
        return external.load_file_backbone(spec.source, backbone_layer, pooling), {"mode": spec.preprocess_mode}
    backbone = _feature_extractor(spec, image_size, weights if source is None else None)
    if source is not None:
        copy_weights(source.get_layer(spec.name), backbone)
    return backbone, {"mode": spec.preprocess_mode, "grayscale": spec.grayscale}


def _feature_extractor(spec: BackboneSpec, image_size: int, weights: str | None) -> keras.Model:
    if spec.pretrained:
        return build_backbone(spec, image_size, weights, 0)
    full = build_backbone(spec, image_size, None, spec.reference_classes or 2)
    return keras.Model(full.inputs, full.get_layer(spec.feature_layer).output, name=spec.name)


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Each layer of `target` that has weights takes those of the layer of the same name in `source`.

    Raises:
        ModelLoadError: `source` lacks a layer or its weights have other shapes.
    """
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            layer.set_weights(source.get_layer(layer.name).get_weights())
        except ValueError as error:
            raise ModelLoadError(
                f"The source run's {target.name} does not fit this one at layer {layer.name} ({str(error).splitlines()[0]}); "
                f"train with the source run's own image size and backbone."
            ) from None


def inference_model(model: keras.Model) -> keras.Model:
    """The classifier as exporters trace it: without the augmentation block, so no random op of
    augmentation (which runs only in training) ends up in an exported graph; and computing in
    float32, since a run trained with mixed precision has float16 layers that LiteRT cannot run
    (its `--quantize float16` is the way to a half-size file). Same weights; layers are shared
    with `model` unless they had to be rebuilt in float32."""
    if any(policy != "float32" for policy in _dtype_policies(model)):
        config = _in_float32(keras.saving.serialize_keras_object(model))
        rebuilt = keras.saving.deserialize_keras_object(config)
        rebuilt.set_weights(model.get_weights())  # the variables of mixed precision are float32 already
        model = rebuilt
    if AUGMENTATION not in {layer.name for layer in model.layers}:
        return model
    return keras.models.clone_model(
        model, clone_function=lambda layer: _PassThrough(name=layer.name) if layer.name == AUGMENTATION else layer
    )


def _dtype_policies(layer: keras.Layer) -> set[str]:
    """The dtype policies of `layer` and of every layer nested in it."""
    return {layer.dtype_policy.name}.union(*(_dtype_policies(inner) for inner in getattr(layer, "layers", [])))


def _in_float32(config):
    """A serialized model with every dtype policy (mixed_float16, float16...) made float32."""
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _in_float32(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_in_float32(value) for value in config]
    return config


class _PassThrough(keras.layers.Layer):
    """Stands in for the augmentation block in `inference_model`."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def pooling_layer(model: keras.Model) -> keras.Layer:
    """The layer that turns the backbone's feature maps into the head's feature vector."""
    names = {layer.name for layer in model.layers}
    return model.get_layer(next(name for name in POOLING_LAYERS if name in names))


def backbone_layers(model: keras.Model, spec: BackboneSpec) -> list[keras.Layer]:
    """The backbone's layers in order, input layer excluded."""
    backbone = model.get_layer(spec.name)
    return [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]


def freeze_backbone(model: keras.Model, spec: BackboneSpec) -> None:
    """Stage 1: only the head trains."""
    model.get_layer(spec.name).trainable = False


def unfreeze_top(model: keras.Model, spec: BackboneSpec, count: int | None) -> list[str]:
    """Stage 2: unfreezes the top `count` backbone layers (`None`: all of them).

    BatchNormalization layers stay frozen wherever they are: their moving statistics and their
    scale and offset keep the values learned on ImageNet (and the backbone runs them in inference
    mode regardless, see the module docstring).

    Returns:
        The names of the backbone layers that now have trainable weights.

    Raises:
        InvalidOptionError: `count` is not between 1 and the number of backbone layers.
    """
    layers = backbone_layers(model, spec)
    if count is not None and not 1 <= count <= len(layers):
        raise InvalidOptionError(
            f"--unfreeze must be 'all' or between 1 and {len(layers)} (the layers of {spec.name}); "
            f"received {count}."
        )
    model.get_layer(spec.name).trainable = True
    frozen = [] if count is None else layers[: len(layers) - count]
    for layer in frozen:
        layer.trainable = False
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return [layer.name for layer in layers if layer.trainable and layer.trainable_weights]


def with_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """`model` with temperature scaling as its last layer (`transfer.models.heads.Temperature`, float32),
    named `temperature`; the same layers and weights."""
    from transfer.models.heads import Temperature

    outputs = Temperature(temperature, dtype="float32", name="temperature")(model.outputs[0])
    return keras.Model(model.inputs[0], outputs, name=model.name)  # one input, as built: called with a tensor
