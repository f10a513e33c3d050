"""From-scratch baselines: LeNet-5 and AlexNet, as in the reference lecture notes.

Both return complete, uncompiled classifiers ending in a softmax layer named `predictions` (a sigmoid
per label with `activation="sigmoid"`, for multi-label data).
"""

from __future__ import annotations

import keras
from keras import layers


def lenet(input_shape=(32, 32, 1), num_classes=10, name="lenet", activation="softmax") -> keras.Model:
    """LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition").

    C1: 6 maps 5x5 tanh; S2: 2x2 average pool; C3: 16 maps 5x5 tanh; S4: 2x2 average pool;
    C5: 120 maps 5x5 tanh; F6: 84 units tanh; softmax output. With a 32x32x1 input and 10 classes
    it has 61,706 parameters (the subsampling layers have no trainable coefficients here).
    """
    inputs = keras.Input(input_shape, name="lenet_input")
    x = layers.Conv2D(6, 5, activation="tanh", name="c1")(inputs)
    x = layers.AveragePooling2D(2, name="s2")(x)
    x = layers.Conv2D(16, 5, activation="tanh", name="c3")(x)
    x = layers.AveragePooling2D(2, name="s4")(x)
    x = layers.Conv2D(120, 5, activation="tanh", name="c5")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(84, activation="tanh", name="f6")(x)
    outputs = layers.Dense(num_classes, activation=activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def alexnet(input_shape=(227, 227, 3), num_classes=1000, name="alexnet", activation="softmax") -> keras.Model:
    """AlexNet (Krizhevsky et al., 2012), single-stream, without local response normalization.

    96 11x11/4 conv, 3x3/2 max pool, 256 5x5 conv (pad 2), max pool, 384 3x3, 384 3x3, 256 3x3
    conv, max pool, FC 4096, FC 4096 (each followed by dropout 0.5), softmax; ReLU throughout.
    With a 227x227x3 input and 1000 classes it has 62,378,344 parameters.
    """
    inputs = keras.Input(input_shape, name="alexnet_input")
    x = layers.Conv2D(96, 11, strides=4, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dropout(0.5, name="dropout6")(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    x = layers.Dropout(0.5, name="dropout7")(x)
    outputs = layers.Dense(num_classes, activation=activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
