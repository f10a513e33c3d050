"""The ImageNet classifier as it comes: its 1000 class names, weights from a file, predict and export."""

import json

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.helpers import write_png
from transfer.cli import app
from transfer.models.imagenet import class_names, wordnet_ids

runner = CliRunner()

# From the Keras documentation and ImageNet's own listing (index: WordNet ID, Keras' name).
KNOWN = {
    0: ("n01440764", "tench"),
    1: ("n01443537", "goldfish"),
    207: ("n02099601", "golden_retriever"),
    281: ("n02123045", "tabby"),
    409: ("n02708093", "analog_clock"),
    999: ("n15075141", "toilet_tissue"),
}


def test_the_1000_class_names_ship_with_the_project():
    names, ids = class_names(), wordnet_ids()
    assert len(names) == len(set(names)) == 1000 and len(set(ids)) == 1000
    assert ids == sorted(ids), "Keras' class order is the order of the sorted WordNet IDs"
    for index, (wordnet_id, name) in KNOWN.items():
        assert (ids[index], names[index]) == (wordnet_id, name)
    assert names[134] == "crane_(bird)" and names[517] == "crane_(machine)"


def test_unknown_classifier_and_stray_weights_are_option_errors(tmp_path):
    image = write_png(tmp_path / "photo.png")
    unknown = runner.invoke(app, ["predict", "imagenet:lenet", str(image)])
    assert unknown.exit_code == 2 and "the ImageNet classifiers are imagenet:resnet50" in unknown.output
    stray = runner.invoke(app, ["predict", str(tmp_path), str(image), "--weights", str(image)])
    assert stray.exit_code == 2 and "--weights must be given only with imagenet:NAME" in stray.output


def test_offline_error_names_the_classifier_file(tmp_path, offline_keras):
    result = runner.invoke(app, ["predict", "imagenet:resnet50", str(write_png(tmp_path / "photo.png"))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in result.output and str(tmp_path / "keras") in result.output
    assert "--weights PATH/TO/resnet50_weights_tf_dim_ordering_tf_kernels.h5" in result.output


@pytest.mark.slow
def test_predict_and_export_with_a_weights_file(tmp_path):
    """Weights this test writes: the top-3 labels and probabilities are those of keras.applications'
    own classifier on `preprocess_input`; the export writes the 1000 labels beside the SavedModel
    (serving an export is the same code as for a run, `tests/test_end_to_end.py`)."""
    keras.utils.set_random_seed(0)
    reference = keras.applications.ResNet50(weights=None)
    weights = tmp_path / "resnet50_classifier.weights.h5"
    reference.save_weights(weights)
    image = write_png(tmp_path / "photo.png", color=(180, 120, 40), size=(224, 224))
    pixels = np.asarray(keras.utils.load_img(image), np.float32)[None]
    expected = reference.predict(keras.applications.resnet50.preprocess_input(pixels.copy()), verbose=0)[0]
    top = np.argsort(-expected)[:3]

    result = runner.invoke(app, ["predict", "imagenet:resnet50", str(image), "--weights", str(weights), "--format", "json"])
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)[0]["predictions"]
    assert [p["label"] for p in predicted] == [class_names()[i] for i in top]
    np.testing.assert_allclose([p["probability"] for p in predicted], expected[top], rtol=1e-4, atol=1e-6)

    export = tmp_path / "export"
    result = runner.invoke(app, ["export", "imagenet:resnet50", "--out", str(export), "--weights", str(weights)])
    assert result.exit_code == 2 and "pass --images FOLDER" in result.output  # no run: nothing to check on
    photos = tmp_path / "photos"
    for index, color in enumerate([(180, 120, 40), (20, 90, 200), (240, 240, 230)]):
        write_png(photos / f"{index}.png", color=color, size=(224, 224))
    result = runner.invoke(app, ["export", "imagenet:resnet50", "--out", str(export), "--weights", str(weights), "--images", str(photos)])
    assert result.exit_code == 0, result.output
    assert "agreement with the Keras model 1.0000 on 3 images" in result.output
    assert (export / "labels.txt").read_text().splitlines() == class_names()
    assert json.loads((export / "config.json").read_text())["image_size"] == 224
