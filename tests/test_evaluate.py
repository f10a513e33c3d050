"""evaluate: metrics on a hand-computed case, the SavedModel against the run, multi-crop views."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from tests.helpers import assert_picture, image_folder
from transfer.cli import app
from transfer.evaluation.evaluate import evaluate, measure, tta_views

runner = CliRunner()


@pytest.mark.slow
def test_evaluate_writes_consistent_metrics_files(digits_run, digits_dir, tmp_path):
    result = runner.invoke(app, ["evaluate", str(digits_run), str(digits_dir), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    errors = pd.read_csv(out / "errors.csv", dtype={"true_label": str, "predicted": str})
    confusion = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert_picture(out / "confusion_matrix.png")
    assert confusion.to_numpy().sum() == metrics["num_images"] == 600
    assert np.trace(confusion.to_numpy()) / 600 == pytest.approx(metrics["accuracy"])
    assert len(errors) == 600 - np.trace(confusion.to_numpy())
    assert errors["confidence"].is_monotonic_decreasing and (errors["true_label"] != errors["predicted"]).all()
    assert metrics["top_k"] == 3 and metrics["top_k_accuracy"] >= metrics["accuracy"] and metrics["tta"] is False
    per_class = pd.read_csv(out / "metrics.csv", index_col=0)
    assert list(per_class.index[-2:]) == ["macro avg", "weighted avg"]
    assert per_class.loc["macro avg", "f1"] == pytest.approx(per_class["f1"].iloc[:10].mean())
    assert f"accuracy {metrics['accuracy']:.4f}" in result.stdout


def test_metrics_of_a_hand_computed_case():
    """Four images, three classes; every number below is worked out by hand.

    true a [.7 .2 .1] -> a;  true b [.5 .4 .1] -> a (wrong, b second);  true c [.2 .3 .5] -> c;
    true b [.1 .8 .1] -> b.
    """
    scores = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    evaluation = measure(["a", "b", "c"], ["1", "2", "3", "4"], scores, ["a", "b", "c", "b"], top_k=2)
    s = evaluation.summary
    assert s["accuracy"] == 0.75 and s["top_k"] == 2 and s["top_k_accuracy"] == 1.0
    assert s["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.4) + math.log(0.5) + math.log(0.8)) / 4)
    per_class = evaluation.per_class
    # a: predicted twice, right once (precision 1/2), its one image found (recall 1): F1 2/3.
    # b: predicted once, right (precision 1), one of its two images found (recall 1/2): F1 2/3.
    assert per_class.loc["a", ["precision", "recall", "f1"]].tolist() == pytest.approx([0.5, 1, 2 / 3])
    assert per_class.loc["b", ["precision", "recall", "f1"]].tolist() == pytest.approx([1, 0.5, 2 / 3])
    assert per_class.loc["c", ["precision", "recall", "f1"]].tolist() == pytest.approx([1, 1, 1])
    assert per_class["support"].tolist() == [1, 2, 1, 4, 4]
    assert s["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert s["weighted_f1"] == pytest.approx((1 * 2 / 3 + 2 * 2 / 3 + 1 * 1) / 4)
    assert evaluation.confusion.to_numpy().tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert evaluation.errors["path"].tolist() == ["2"] and evaluation.errors["confidence"].tolist() == [0.5]
    assert evaluation.errors["top"].iloc[0] == "a 0.500; b 0.400; c 0.100"


@pytest.mark.slow
def test_savedmodel_evaluates_like_the_run(digits_run, digits_dir, tmp_path):
    export = tmp_path / "export"
    assert runner.invoke(app, ["export", str(digits_run), "--out", str(export)]).exit_code == 0
    data = pd.DataFrame({"path": [str(p) for p in sorted((digits_dir / "4").iterdir())], "label": "4"})
    from_run, from_export = evaluate(digits_run, data), evaluate(export, data)
    np.testing.assert_allclose(from_export.scores, from_run.scores, atol=1e-5)
    with_tta = evaluate(export, data, tta=True)
    assert with_tta.summary["tta"] is True and not np.allclose(with_tta.scores, from_run.scores)


def test_tta_views_are_corner_and_centre_crops_and_mirrors():
    pixels = tf.reshape(tf.range(2 * 10 * 10 * 3, dtype=tf.float32), (2, 10, 10, 3))
    views = tta_views(pixels, 8, mirror=True).numpy()
    assert views.shape == (2, 10, 8, 8, 3)
    np.testing.assert_array_equal(views[:, 0], pixels[:, :8, :8])
    np.testing.assert_array_equal(views[:, 3], pixels[:, 2:, 2:])
    np.testing.assert_array_equal(views[:, 4], pixels[:, 1:9, 1:9])
    np.testing.assert_array_equal(views[:, 5], views[:, 0, :, ::-1])
    assert tta_views(pixels, 8, mirror=False).shape[1] == 5


@pytest.mark.slow
def test_evaluate_refuses_classes_the_model_does_not_know(digits_run, tmp_path):
    data = image_folder(tmp_path / "other", classes=("0", "cat"), per_class=2)
    result = runner.invoke(app, ["evaluate", str(digits_run), str(data), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "classes the model was not trained on: cat" in result.output


def test_classes_absent_from_the_data_stay_out_of_the_averages():
    """Classes a, b, c; the data has only a and b, both right: the macro F1 is 1, not (1 + 1 + 0) / 3."""
    scores = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    evaluation = measure(["a", "b", "c"], ["1", "2"], scores, ["a", "b"])
    assert evaluation.summary["macro_f1"] == 1.0 and evaluation.summary["classes_absent"] == ["c"]
    assert evaluation.per_class.loc["c", "support"] == 0


def test_confusion_counts_are_readable_on_their_cells():
    """A near-chance model's counts are all high: the text follows the colour scale (from 0), never
    white on a pale cell or black on a dark one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transfer.outputs.figures import cell_text_colours

    near_chance = np.array([[40, 45], [42, 43]])
    figure, axis = plt.subplots()
    image = axis.imshow(near_chance, cmap="Blues", vmin=0, vmax=near_chance.max())
    assert (cell_text_colours(near_chance, image) == "white").all(), "every cell is dark on a scale from 0"
    good = np.array([[50, 1], [0, 49]])
    image = axis.imshow(good, cmap="Blues", vmin=0, vmax=good.max())
    assert cell_text_colours(good, image).tolist() == [["white", "black"], ["black", "white"]]
    plt.close(figure)
