"""The new classification head placed on a pretrained backbone's feature map."""

from __future__ import annotations

from keras import layers


def classification_head(features, num_classes: int, dropout_rate: float = 0.2, head_units: int = 0):
    """Global average pooling, dropout, an optional ReLU dense layer, and a softmax dense layer.

    Args:
        features: the backbone's `[batch, height, width, channels]` output tensor.
        num_classes: size of the softmax.
        dropout_rate: dropout before each dense layer.
        head_units: units of the hidden dense layer; 0 for none.

    Returns:
        The `[batch, num_classes]` probabilities tensor.
    """
    x = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    x = layers.Dropout(dropout_rate, name="head_dropout")(x)
    if head_units:
        x = layers.Dense(head_units, activation="relu", name="head_dense")(x)
        x = layers.Dropout(dropout_rate, name="head_dense_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)
