"""A full classifier: raw pixels in, class probabilities out; and its training stages.

Layout, for a pretrained backbone:

    image [0, 255] -> augmentation (training only) -> preprocess -> backbone(training=False)
                   -> avg_pool -> head: head_dropout -> [head_dense] -> predictions (softmax)

and for a from-scratch baseline, which carries its own classifier:

    image [0, 255] -> augmentation (training only) -> preprocess -> lenet | alexnet

The backbone is called with `training=False`, and its BatchNormalization layers stay frozen in
both stages. The second is what guarantees inference mode in Keras 3: a functional model passes the
`training` flag of its own call down to every layer, overriding the `training=False` recorded at
construction, but a BatchNormalization layer with `trainable=False` always normalizes with its
moving (ImageNet) statistics and never updates them.
"""

from __future__ import annotations

import keras

from transfer.backbones import BackboneSpec, build_backbone
from transfer.errors import InvalidOptionError
from transfer.heads import classification_head
from transfer.preprocessing import Preprocess


def build_classifier(
    spec: BackboneSpec,
    num_classes: int,
    image_size: int,
    weights: str | None,
    dropout_rate: float = 0.2,
    head_units: int = 0,
    augmentation: keras.Layer | None = None,
) -> keras.Model:
    """Returns an uncompiled classifier; a pretrained backbone starts frozen."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = augmentation(inputs) if augmentation is not None else inputs
    x = Preprocess(spec.preprocess_mode, grayscale=spec.grayscale, dtype="float32", name="preprocess")(x)
    backbone = build_backbone(spec, image_size, weights, num_classes)
    if spec.pretrained:
        backbone.trainable = False
        x = backbone(x, training=False)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        outputs = classification_head(x.shape[-1], num_classes, dropout_rate, head_units)(x)
    else:
        outputs = backbone(x)
    return keras.Model(inputs, outputs, name=f"{spec.name}_classifier")


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
