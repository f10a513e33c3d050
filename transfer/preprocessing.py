"""Pixels in: the one image decoder and the in-model preprocessing layer.

Every path into a model uses `decode_image` (encoded file bytes -> float32 RGB pixels in [0, 255]
at the model's square input size): the training pipeline, `transfer predict` and the graph of the
exported SavedModel. Every model then starts with a `Preprocess` layer that maps those raw pixels to
what its backbone was trained on, so preprocessing cannot drift between training, prediction and
export.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras.applications import imagenet_utils

#: File name suffixes read as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def decode_image(contents: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one encoded image to float32 RGB pixels in [0, 255], resized to a square.

    JPEG, PNG, BMP and GIF (first frame) are accepted. Grayscale and palette images are expanded to
    RGB and an alpha channel is dropped. Large JPEGs are decoded at a reduced scale that stays at
    least `image_size` on the shorter side. Resizing is bilinear with antialiasing and ignores the
    aspect ratio, as `keras.utils.image_dataset_from_directory` does.

    Args:
        contents: scalar `tf.string`, the bytes of an image file.
        image_size: side of the output square, in pixels.

    Returns:
        A `[image_size, image_size, 3]` float32 tensor.

    Raises:
        tf.errors.InvalidArgumentError: when the bytes are not a decodable image.
    """
    image = tf.cond(
        tf.io.is_jpeg(contents),
        lambda: _decode_jpeg_reduced(contents, image_size),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8),
    )
    image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return tf.ensure_shape(image, (image_size, image_size, 3))


def _decode_jpeg_reduced(contents: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes a JPEG at 1/8, 1/4 or 1/2 scale (the largest reduction still at least `image_size`
    on the shorter side), which libjpeg does in the DCT domain, far faster than a full decode."""
    height_width = tf.image.extract_jpeg_shape(contents)[:2]
    shorter = tf.reduce_min(height_width)

    def decode(ratio):
        return lambda: tf.io.decode_jpeg(contents, channels=3, ratio=ratio)

    return tf.case(
        [(shorter >= image_size * ratio, decode(ratio)) for ratio in (8, 4, 2)],
        default=decode(1),
    )


@keras.saving.register_keras_serializable(package="transfer")
class Preprocess(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to a backbone's input convention.

    Args:
        mode: the `keras.applications.imagenet_utils.preprocess_input` mode: `"caffe"` (RGB to BGR,
            ImageNet mean subtracted; ResNet50, VGG16), `"tf"` (scaled to [-1, 1]; InceptionV3 and
            the from-scratch baselines) or `"torch"` (scaled to [0, 1], ImageNet mean and std).
        grayscale: convert to one luminance channel first (LeNet-5 reads grayscale digits).
    """

    MODES = ("caffe", "tf", "torch")

    def __init__(self, mode: str, grayscale: bool = False, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"Preprocess mode must be one of {self.MODES}, received mode={mode!r}")
        self.mode = mode
        self.grayscale = grayscale

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        if self.grayscale:
            x = keras.ops.image.rgb_to_grayscale(x, data_format="channels_last")
        return imagenet_utils.preprocess_input(x, data_format="channels_last", mode=self.mode)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1 if self.grayscale else input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "grayscale": self.grayscale}
