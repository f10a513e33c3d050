"""Fuzzing (hypothesis): random bytes and mutated real images give a result or a clear error.

The image decoder, the folder loader and the exported model's serving signature are fed random
bytes, real photos with bytes flipped, cut or spliced, and headers that claim enormous sizes.
Each input must decode to finite pixels of the right shape or raise TensorFlow's
`InvalidArgumentError` (which the CLI reports per file); anything else, or a crash of the
process, fails the test.
"""

import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.cli_cases import Workspace
from tests.helpers import blocks, encoded
from transfer.data.folders import iter_decoded_batches
from transfer.data.preprocessing import decode_image

pytestmark = pytest.mark.slow

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def real_images() -> list[bytes]:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    image = blocks(64, 48)
    return [
        encoded(image, "JPEG", quality=85, exif=exif.tobytes()),
        encoded(image, "PNG"),
        encoded(image.convert("P"), "GIF"),
        encoded(image, "BMP"),
    ]


REAL = real_images()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header (with a valid CRC) claims `width` x `height` but holds one row."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """The real JPEG with its frame header (SOF0) rewritten to claim `width` x `height`."""
    data = bytearray(REAL[0])
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "splice", "zero"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            data = data[:position]
        elif action == "splice":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif data:
            data[position : position + draw(st.integers(1, 64))] = b"\0" * 1
    return bytes(data)


IMAGE_BYTES = st.one_of(st.binary(max_size=4096), mutated())


def check_decodes_or_refuses(data: bytes, size: int = 24) -> None:
    try:
        pixels = decode_image(tf.constant(data), size).numpy()
    except tf.errors.InvalidArgumentError as error:
        assert error.message
        return
    assert pixels.shape == (size, size, 3) and np.isfinite(pixels).all()
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3


@SETTINGS
@given(IMAGE_BYTES)
@example(b"")
@example(png_claiming(100_000, 100_000))
@example(png_claiming(2**31 - 1, 1))
@example(jpeg_claiming(65_500, 65_500))
@example(b"Exif\x00\x00MM\x00*\xff\xff\xff\xff")  # an EXIF block pointing far outside the file
def test_decoder_never_crashes(data):
    check_decodes_or_refuses(data)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(st.lists(IMAGE_BYTES, min_size=1, max_size=6))
def test_loader_accounts_for_every_file(tmp_path, files):
    paths = []
    for i, data in enumerate(files):
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}_{i}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    batches = list(iter_decoded_batches(paths, 16, batch_size=4))
    decoded = [p for b in batches for p in b.paths]
    failed = [p for b in batches for p, reason in b.failed if reason]
    assert sorted(decoded + failed) == sorted(paths)
    assert all(np.isfinite(b.pixels).all() for b in batches)


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    export = Workspace(tmp_path_factory.mktemp("fuzz")).export
    return tf.saved_model.load(str(export)).signatures["serving_default"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(st.lists(IMAGE_BYTES, min_size=1, max_size=3))
def test_serving_signature_answers_or_refuses(serve, images):
    try:
        outputs = serve(images=tf.constant(images, dtype=tf.string))
    except tf.errors.InvalidArgumentError as error:
        assert error.message
        return
    probabilities = outputs["probabilities"].numpy()
    assert outputs["labels"].shape == (len(images), 2) and np.isfinite(probabilities).all()
    np.testing.assert_allclose(outputs["scores"].numpy().sum(axis=1), 1, atol=1e-4)
