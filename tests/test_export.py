"""The SavedModel's serving signature at its edges: no image, and a file that is not one."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transfer import outputs
from transfer.export import export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def serve(digits_run, tmp_path_factory):
    path = export(digits_run, tmp_path_factory.mktemp("export") / "digits")
    assert outputs.marker_of(path)["kind"] == "export"
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (32, 32), value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_empty_batch_gets_empty_answers(serve):
    answer = serve(images=tf.constant([], dtype=tf.string))
    assert answer["labels"].shape == (0, 3) and answer["probabilities"].shape == (0, 3)
    assert answer["scores"].shape == (0, 10)


def test_a_file_that_is_not_an_image_is_named_by_its_index(serve):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images\[1\] is not a JPEG, PNG, GIF, BMP or WebP file"):
        serve(images=tf.constant([png(0), b"%PDF-1.7 not an image", png(255)]))
    answer = serve(images=tf.constant([png(0), png(255)]))
    assert answer["labels"].shape == (2, 3)
    np.testing.assert_allclose(answer["scores"].numpy().sum(axis=1), 1, atol=1e-5)
