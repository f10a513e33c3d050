"""Pixels in: the one image decoder and the in-model preprocessing layer.

Every path into a model uses `decode_image` (encoded file bytes -> float32 RGB pixels in [0, 255]
at the model's square input size): the training pipeline, `transfer predict` and the graph of the
exported SavedModel. HEIC and AVIF photos, which TensorFlow's graph decoders cannot read, are first
made lossless PNG bytes by Pillow on the Python side (`graph_bytes`, and `decode_any` inside the
`tf.data` pipelines); the same pixels then go through the same `decode_image`. Every model then starts with a `Preprocess` layer that maps those raw pixels to
what its backbone was trained on, so preprocessing cannot drift between training, prediction and
export.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras.applications import imagenet_utils

def decode_image(contents: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one encoded image to float32 RGB pixels in [0, 255], resized to a square.

    JPEG, PNG, BMP, GIF (first frame) and WebP are accepted, whatever the file's name says. Grayscale,
    palette and CMYK images become RGB, an alpha channel is dropped, and 16-bit PNGs are scaled to 8
    bits. A JPEG's EXIF orientation is applied, so a photo taken sideways comes out upright. Large
    JPEGs are decoded at a reduced scale that stays at least `image_size` on the shorter side. Resizing is bilinear with antialiasing and ignores the
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
        lambda: apply_orientation(_decode_jpeg_reduced(contents, image_size), exif_orientation(contents)),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8),
    )
    image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return tf.ensure_shape(image, (image_size, image_size, 3))


#: What is said of bytes that `is_image_format` refuses.
NOT_AN_IMAGE = "not a JPEG, PNG, GIF, BMP or WebP file"


def is_image_format(contents: tf.Tensor) -> tf.Tensor:
    """Whether encoded bytes start like a JPEG, PNG, GIF, BMP or WebP file (a scalar `tf.bool`)."""
    head = tf.strings.join([tf.strings.substr(contents, 0, tf.minimum(tf.strings.length(contents), 12)), "\0" * 12])

    def starts(offset, signature):
        return tf.equal(tf.strings.substr(head, offset, len(signature)), signature)

    return tf.reduce_any(tf.stack([
        starts(0, b"\xff\xd8\xff"),
        starts(0, b"\x89PNG\r\n\x1a\n"),
        starts(0, b"GIF8"),
        starts(0, b"BM"),
        tf.logical_and(starts(0, b"RIFF"), starts(8, b"WEBP")),
    ]))


#: The ISO media brands (the `ftyp` box) of the photos Pillow decodes for the graph decoder.
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
AVIF_BRANDS = (b"avif", b"avis")


def pillow_format(content: bytes) -> str | None:
    """`"HEIC"` or `"AVIF"` for the bytes of such a photo (by its `ftyp` box), else `None`."""
    if len(content) < 16 or content[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(content[:4], "big"), len(content), 256)
    brands = [content[8:12]] + [content[offset:offset + 4] for offset in range(16, end - 3, 4)]
    for brand in brands:  # the major brand first, then the compatible ones
        if brand in AVIF_BRANDS:
            return "AVIF"
        if brand in HEIF_BRANDS[:6]:
            return "HEIC"
    return "HEIC" if any(brand in HEIF_BRANDS for brand in brands) else None


def pillow_reader_missing(kind: str) -> str | None:
    """What is missing to read a `kind` photo (`pillow_format`), in one line, or `None`."""
    if kind == "HEIC":
        from transfer.core import extras

        return extras.missing("heic")
    from PIL import features

    if not features.check("avif"):
        return "AVIF images need a Pillow built with AVIF support (11.2 or later): pip install -U pillow"
    return None


def to_png(content: bytes) -> bytes:
    """The upright RGB pixels of a HEIC or AVIF photo as lossless PNG bytes (Pillow; EXIF orientation
    applied as `apply_orientation` does for JPEG; pillow-heif applies HEIC's own rotation on reading).

    Raises:
        OSError, ValueError: Pillow cannot read the bytes (or the reader is not installed).
    """
    import io

    from PIL import Image, ImageOps

    if pillow_format(content) == "HEIC":
        import pillow_heif

        pillow_heif.register_heif_opener()
    with Image.open(io.BytesIO(content)) as image:
        image.load()  # a truncated file fails here, not later
        upright = ImageOps.exif_transpose(image)
        buffer = io.BytesIO()
        upright.convert("RGB").save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def graph_bytes(content: bytes) -> bytes:
    """`content` as the graph decoder (`decode_image`, an exported SavedModel) takes it: a HEIC or AVIF
    photo becomes PNG bytes (`to_png`); anything else, and a photo that cannot be converted, is
    returned as it is (the decoder then refuses it with the reason)."""
    if pillow_format(content) is None:
        return content
    try:
        return to_png(content)
    except (OSError, ValueError, ImportError, SyntaxError):
        return content


def content_error(content: bytes) -> str | None:
    """Why encoded bytes are not an image this tool reads, by their kind (the one text for each, in
    train, predict, evaluate and the server), or `None` where they look like one."""
    if not content:
        return "empty file (0 bytes)"
    kind = pillow_format(content)
    if kind:
        missing = pillow_reader_missing(kind)
        if missing:
            return f"a {kind} image, not read: {missing}"
        try:
            to_png(content)
        except Exception as error:  # Pillow's and its plugins' errors have no common base
            said = str(error).splitlines()[0] if str(error) else type(error).__name__
            if said.startswith("cannot identify image file"):  # Pillow names its in-memory buffer: nothing to the user
                said = "Pillow cannot decode it"
            return f"a damaged {kind} image ({said})"
        return None
    if not bool(is_image_format(tf.constant(content))):
        return NOT_AN_IMAGE + " (nor HEIC or AVIF)"
    return None


def decode_any(contents: tf.Tensor, image_size: int) -> tf.Tensor:
    """`decode_image`, and HEIC and AVIF photos too: those (an ISO media `ftyp` box) are converted to
    PNG by Pillow in a `tf.numpy_function`, on the Python side. For input pipelines and Python
    callers only, never inside an exported model (whose graph must not call Python). A photo Pillow
    cannot read reaches `decode_image` as it is, which refuses it (`InvalidArgumentError`)."""

    def convert(content):
        return np.asarray(graph_bytes(content.item() if isinstance(content, np.ndarray) else bytes(content)), dtype=object)

    iso_media = tf.equal(tf.strings.substr(contents, 4, 4), b"ftyp")
    contents = tf.cond(
        iso_media,
        lambda: tf.reshape(tf.numpy_function(convert, [contents], tf.string, stateful=False), []),
        lambda: contents,
    )
    return decode_image(contents, image_size)


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


#: EXIF orientation value -> the transform that makes the image upright (as PIL's `exif_transpose`).
_ORIENTATIONS = {
    1: lambda image: image,
    2: lambda image: tf.reverse(image, [1]),  # mirrored
    3: lambda image: tf.reverse(image, [0, 1]),  # upside down
    4: lambda image: tf.reverse(image, [0]),  # flipped
    5: lambda image: tf.transpose(image, [1, 0, 2]),  # transposed
    6: lambda image: tf.reverse(tf.transpose(image, [1, 0, 2]), [1]),  # rotate 90 clockwise
    7: lambda image: tf.reverse(tf.transpose(image, [1, 0, 2]), [0, 1]),  # transverse
    8: lambda image: tf.reverse(tf.transpose(image, [1, 0, 2]), [0]),  # rotate 90 counter-clockwise
}


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Makes a decoded `[H, W, C]` image upright for its EXIF `orientation` (1-8; 1 = as stored)."""
    return tf.switch_case(
        tf.cast(orientation, tf.int32) - 1,
        [lambda transform=transform: transform(image) for transform in _ORIENTATIONS.values()],
    )


def exif_orientation(contents: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation tag (0x0112) of a JPEG's APP1 segment, or 1 when absent or garbled.

    Graph ops only, so the exported model applies it too: finds the `Exif\\0\\0` header in the
    first 64 KiB, reads the TIFF byte order and the first IFD, and looks the tag up among its
    12-byte entries. Every read is bounds-checked; anything out of range counts as no tag.
    """
    head = tf.strings.substr(contents, 0, tf.minimum(tf.strings.length(contents), 65536))
    parts = tf.strings.split(head, sep="Exif\x00\x00", maxsplit=1)
    tiff = tf.cond(tf.size(parts) > 1, lambda: parts[-1], lambda: tf.constant(b""))
    data = tf.cast(tf.io.decode_raw(tiff, tf.uint8), tf.int64)
    size = tf.size(data, out_type=tf.int64)
    padded = tf.concat([data, tf.zeros([8], tf.int64)], 0)  # reads below stay in range
    little_endian = tf.reduce_all(tf.equal(padded[:2], [0x49, 0x49]))  # "II"; "MM" is big-endian

    def number(offsets, length):
        """Unsigned integers of `length` bytes at `offsets` (clipped into the data)."""
        index = tf.clip_by_value(offsets[..., None] + tf.range(length, dtype=tf.int64), 0, size + 7)
        digits = tf.gather(padded, index)
        digits = tf.where(little_endian, tf.reverse(digits, [-1]), digits)
        return tf.reduce_sum(digits * 256 ** tf.range(length - 1, -1, -1, dtype=tf.int64), -1)

    ifd = number(tf.constant(4, tf.int64), 4)
    count = number(ifd, 2)
    count = tf.clip_by_value(tf.minimum(count, (size - ifd - 2) // 12), 0, 1000)
    entries = ifd + 2 + 12 * tf.range(count)
    tags, values = number(entries, 2), number(entries + 8, 2)
    found = tf.boolean_mask(values, tf.equal(tags, 0x0112))
    orientation = tf.cond(tf.size(found) > 0, lambda: found[0], lambda: tf.constant(1, tf.int64))
    valid = (size >= 8) & (orientation >= 1) & (orientation <= 8)
    return tf.where(valid, orientation, tf.constant(1, tf.int64))


@keras.saving.register_keras_serializable(package="transfer")
class Preprocess(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to a backbone's input convention.

    Args:
        mode: the `keras.applications.imagenet_utils.preprocess_input` mode: `"caffe"` (RGB to BGR,
            ImageNet mean subtracted; ResNet50, VGG16), `"tf"` (scaled to [-1, 1]; InceptionV3 and
            the from-scratch baselines) or `"torch"` (scaled to [0, 1], ImageNet mean and std);
            `"none"` (the pixels as they are: a model file, or a registry backbone such as EfficientNetV2,
            ConvNeXt or MobileNetV3, that preprocesses them itself); or
            `"keras-hub"` (`x * scale + offset` per channel: a keras-hub preset's image converter).
        grayscale: convert to one luminance channel first (LeNet-5 reads grayscale digits).
        scale, offset: the three per-channel numbers of `"keras-hub"`.
    """

    MODES = ("caffe", "tf", "torch", "none", "keras-hub")

    def __init__(self, mode: str, grayscale: bool = False, scale=None, offset=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"Preprocess mode must be one of {self.MODES}, received mode={mode!r}")
        if (mode == "keras-hub") != (scale is not None and offset is not None):
            raise ValueError(f"Preprocess takes scale and offset with mode='keras-hub' only; received mode={mode!r}")
        self.mode = mode
        self.grayscale = grayscale
        self.scale = None if scale is None else [float(v) for v in scale]
        self.offset = None if offset is None else [float(v) for v in offset]

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        if self.grayscale:
            x = keras.ops.image.rgb_to_grayscale(x, data_format="channels_last")
        if self.mode == "none":
            return x
        if self.mode == "keras-hub":
            return x * keras.ops.convert_to_tensor(self.scale) + keras.ops.convert_to_tensor(self.offset)
        return imagenet_utils.preprocess_input(x, data_format="channels_last", mode=self.mode)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1 if self.grayscale else input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "grayscale": self.grayscale, "scale": self.scale, "offset": self.offset}
