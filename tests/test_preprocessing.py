"""The one image decoder (formats, modes, EXIF orientation, sizes) and the in-model Preprocess layer."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from tests.helpers import blocks, encoded, write_image
from transfer.models.registry import BACKBONES
from transfer.data.preprocessing import Preprocess, decode_image

MATCHING_PREPROCESS = {
    "resnet50": keras.applications.resnet50.preprocess_input,
    "vgg16": keras.applications.vgg16.preprocess_input,
    "inceptionv3": keras.applications.inception_v3.preprocess_input,
}
assert set(MATCHING_PREPROCESS) == {n for n, s in BACKBONES.items() if s.pretrained and s.preprocess_mode != "none"}


FORMATS_AND_MODES = [
    (fmt, mode)
    for fmt in ("PNG", "BMP", "GIF", "JPEG")
    for mode in ("L", "P", "RGBA", "RGB")
    if not (fmt == "JPEG" and mode in ("P", "RGBA"))  # JPEG files cannot hold palette or alpha
]


@pytest.mark.parametrize("fmt, mode", FORMATS_AND_MODES)
def test_every_format_and_mode_decodes_to_rgb(tmp_path, fmt, mode):
    path = write_image(tmp_path / f"x.{fmt.lower()}", mode=mode, fmt=fmt)
    pixels = decode_image(path.read_bytes(), 12).numpy()
    assert pixels.shape == (12, 12, 3) and pixels.dtype == np.float32
    assert 0 <= pixels.min() and pixels.max() <= 255


def test_grayscale_becomes_equal_rgb_channels(tmp_path):
    path = write_image(tmp_path / "g.png", mode="L", color=(90, 90, 90))
    pixels = decode_image(path.read_bytes(), 4).numpy()
    np.testing.assert_allclose(pixels, 90, atol=1)


def resized(image: Image.Image, size: int) -> np.ndarray:
    pixels = tf.constant(np.asarray(image.convert("RGB"), np.float32))
    return tf.image.resize(pixels, (size, size), antialias=True).numpy()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(blocks(), "JPEG", quality=95, exif=exif.tobytes())
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    got = decode_image(data, 16).numpy()
    assert np.abs(got - resized(upright, 16)).mean() < 4


def test_little_endian_exif_is_read_too():
    # TIFF header "II" (Intel byte order), one IFD entry: orientation (0x0112) = 6.
    tiff = b"II*\x00\x08\x00\x00\x00" + b"\x01\x00" + b"\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00" + b"\x00" * 4
    app1 = b"\xff\xe1" + (len(tiff) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + tiff
    plain = encoded(blocks(), "JPEG", quality=95)
    rotated = plain[:2] + app1 + plain[2:]
    expected = resized(blocks().transpose(Image.Transpose.ROTATE_270), 16)
    assert np.abs(decode_image(rotated, 16).numpy() - expected).mean() < 4


def test_cmyk_jpeg_decodes_to_the_same_colours():
    rgb = Image.new("RGB", (32, 24), (200, 30, 60))
    pixels = decode_image(encoded(rgb.convert("CMYK"), "JPEG", quality=95), 8).numpy()
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (200, 30, 60), atol=4)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_to_8_bits(channels):
    values = np.array([60000, 1000, 30000][:channels], np.uint16)
    png = tf.io.encode_png(tf.constant(np.broadcast_to(values, (12, 10, channels)).copy())).numpy()
    pixels = decode_image(png, 4).numpy()
    expected = np.broadcast_to(values / 257.0, (3,)) if channels == 1 else values / 257.0
    np.testing.assert_allclose(pixels[0, 0], expected, atol=1.5)


@pytest.mark.parametrize("actual, named", [("PNG", "jpg"), ("BMP", "png"), ("JPEG", "png"), ("GIF", "jpeg")])
def test_wrong_extension_is_decoded_by_content(tmp_path, actual, named):
    image = Image.new("RGB", (20, 20), (10, 200, 90))
    path = tmp_path / f"photo.{named}"
    path.write_bytes(encoded(image, actual))
    pixels = decode_image(path.read_bytes(), 6).numpy()
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (10, 200, 90), atol=6)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_very_large_image_decodes(fmt):
    big = Image.new("RGB", (6000, 4000), (30, 60, 90))
    pixels = decode_image(encoded(big, fmt), 32).numpy()
    assert pixels.shape == (32, 32, 3)
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (30, 60, 90), atol=3)


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (7, 30)])
def test_tiny_images_are_upsampled(size):
    pixels = decode_image(encoded(Image.new("RGB", size, (1, 2, 250)), "PNG"), 32).numpy()
    assert pixels.shape == (32, 32, 3)
    np.testing.assert_allclose(pixels, np.broadcast_to((1, 2, 250), (32, 32, 3)), atol=1)


@pytest.mark.parametrize("name", list(MATCHING_PREPROCESS))  # the others preprocess inside (tests/test_registry.py)
def test_preprocess_layer_matches_keras_applications(name):
    spec = BACKBONES[name]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = MATCHING_PREPROCESS[name](pixels.copy())
    actual = keras.ops.convert_to_numpy(Preprocess(spec.preprocess_mode)(pixels))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)


def test_grayscale_preprocess_gives_one_channel_in_minus_one_to_one():
    pixels = np.stack([np.zeros((4, 4, 3)), np.full((4, 4, 3), 255.0)]).astype("float32")
    out = keras.ops.convert_to_numpy(Preprocess("tf", grayscale=True)(pixels))
    assert out.shape == (2, 4, 4, 1)
    np.testing.assert_allclose(out[0], -1.0, atol=1e-5)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-3)  # luma weights sum to 0.9999


def photo_bytes(fmt: str, image: Image.Image, orientation: int = 1) -> bytes:
    """`image` as a HEIC or AVIF file (4:4:4 chroma, top quality) with an EXIF orientation tag."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = orientation
    chroma = {"chroma": 444} if fmt == "HEIF" else {"subsampling": "4:4:4"}
    return encoded(image, fmt, quality=100, exif=exif.tobytes(), **chroma)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("orientation, upright", [(1, None), (6, Image.Transpose.ROTATE_270), (3, Image.Transpose.ROTATE_180)])
def test_heic_and_avif_decode_upright_like_the_same_image_as_png(fmt, orientation, upright):
    from transfer.data.preprocessing import decode_any, pillow_format

    image = blocks()
    data = photo_bytes(fmt, image, orientation)
    assert pillow_format(data) == ("HEIC" if fmt == "HEIF" else "AVIF")
    expected = decode_image(encoded(image.transpose(upright) if upright else image, "PNG"), 16).numpy()
    got = decode_any(tf.constant(data), 16).numpy()
    assert np.abs(got - expected).mean() < 4, "within the codec's error of the PNG"
    if upright:
        assert np.abs(decode_image(encoded(image, "PNG"), 16).numpy() - got).mean() > 40, "the orientation was applied"
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_image(data, 16)  # the graph decoder (an exported SavedModel's) does not read them itself


def test_graph_bytes_makes_photos_png_and_leaves_other_files_as_they_are():
    from transfer.data.preprocessing import graph_bytes

    heic, jpeg = photo_bytes("HEIF", blocks()), encoded(blocks(), "JPEG")
    assert graph_bytes(jpeg) is jpeg and graph_bytes(b"not an image") == b"not an image"
    png = graph_bytes(heic)
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == blocks().size
    damaged = heic[: len(heic) // 2]
    assert graph_bytes(damaged) is damaged, "left for the decoder to refuse with its reason"


def test_a_heic_photo_without_the_extra_is_refused_naming_it_and_avif_needs_none(monkeypatch):
    import sys

    from transfer.data.preprocessing import content_error

    heic, avif = photo_bytes("HEIF", blocks()), photo_bytes("AVIF", blocks())
    assert content_error(heic) is None and content_error(avif) is None
    assert "HEIC or AVIF" in content_error(b"%PDF-1.7")
    assert content_error(heic[:200]).startswith("a damaged HEIC image")
    damaged = content_error(avif[:200])
    assert damaged.startswith("a damaged AVIF image") and "<_io" not in damaged and "object at 0x" not in damaged, damaged
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed: importing it fails
    assert "pip install 'keras-transfer[heic]'" in content_error(heic)
    assert content_error(avif) is None
