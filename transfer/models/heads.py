"""The new classification head placed on a pretrained backbone's pooled features."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers


@dataclass(frozen=True)
class HeadSpec:
    """The new head: dropout before each dense layer, the hidden units (0: none), and whether it ends
    in one sigmoid per label (multi-label) instead of a softmax."""

    dropout_rate: float = 0.2
    units: int = 0
    multi_label: bool = False


def classification_head(
    num_features: int, num_classes: int, dropout_rate: float = 0.2, head_units: int = 0, activation: str = "softmax"
) -> keras.Sequential:
    """Dropout, an optional ReLU dense layer with its own dropout, and a softmax dense layer (a
    sigmoid per label, `activation="sigmoid"`, for multi-label data).

    The head is a model of its own, named `head`, that reads the backbone's globally average
    pooled features; so the frozen stage can train it directly on cached features (see
    `transfer.training.features`), sharing its weights with the full classifier.

    Args:
        num_features: channels of the backbone's output (2048 for ResNet50).
        num_classes: size of the softmax.
        dropout_rate: dropout before each dense layer.
        head_units: units of the hidden dense layer; 0 for none.
    """
    steps = [keras.Input((num_features,), name="features"), layers.Dropout(dropout_rate, name="head_dropout")]
    if head_units:
        steps += [
            layers.Dense(head_units, activation="relu", name="head_dense"),
            layers.Dropout(dropout_rate, name="head_dense_dropout"),
        ]
    steps.append(layers.Dense(num_classes, activation=activation, dtype="float32", name="predictions"))
    return keras.Sequential(steps, name="head")


@keras.saving.register_keras_serializable(package="transfer")
class Temperature(layers.Layer):
    """Temperature scaling of probabilities, the classifier's last layer: `softmax(log p / T)`
    (`transfer.metrics.calibration`). T > 1 flattens overconfident probabilities; no prediction changes."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probabilities):
        logits = keras.ops.log(keras.ops.clip(keras.ops.cast(probabilities, "float32"), 1e-12, 1.0))
        return keras.ops.softmax(logits / self.temperature, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}
