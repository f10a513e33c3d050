"""evaluate, report, visualize, compare: metrics checked against scikit-learn, the report in a browser."""

import json
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn import metrics as skm
from typer.testing import CliRunner

from tests.helpers import image_folder

from transfer.cli import app
from transfer.evaluation import evaluate, tta_views

runner = CliRunner()


def test_evaluate_writes_metrics_that_match_scikit_learn(digits_run, digits_dir, tmp_path):
    result = runner.invoke(app, ["evaluate", str(digits_run), str(digits_dir), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    errors = pd.read_csv(out / "errors.csv", dtype={"true_label": str, "predicted": str})
    confusion = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert (out / "confusion_matrix.png").stat().st_size > 5000
    assert confusion.to_numpy().sum() == metrics["num_images"] == 600
    assert np.trace(confusion.to_numpy()) / 600 == pytest.approx(metrics["accuracy"])
    assert len(errors) == 600 - np.trace(confusion.to_numpy())
    assert errors["confidence"].is_monotonic_decreasing and (errors["true_label"] != errors["predicted"]).all()
    assert metrics["top_k"] == 3 and metrics["top_k_accuracy"] >= metrics["accuracy"] and metrics["tta"] is False
    per_class = pd.read_csv(out / "metrics.csv", index_col=0)
    assert list(per_class.index[-2:]) == ["macro avg", "weighted avg"]
    assert per_class.loc["macro avg", "f1"] == pytest.approx(per_class["f1"].iloc[:10].mean())
    assert f"accuracy {metrics['accuracy']:.4f}" in result.stdout


def test_evaluation_against_scikit_learn_directly(digits_run, digits_dir):
    data = pd.DataFrame({"path": [str(p) for p in sorted(digits_dir.rglob("*.png"))]})
    data["label"] = [p.rsplit("/", 2)[-2] for p in data["path"]]
    evaluation = evaluate(digits_run, data)
    truth = data.set_index("path").loc[evaluation.examples["path"], "label"].astype(int).to_numpy()
    assert evaluation.summary["log_loss"] == pytest.approx(skm.log_loss(truth, evaluation.scores, labels=range(10)))
    assert evaluation.summary["top_k_accuracy"] == pytest.approx(skm.top_k_accuracy_score(truth, evaluation.scores, k=3, labels=range(10)))
    f1 = skm.f1_score(truth, evaluation.scores.argmax(1), average=None, labels=range(10))
    np.testing.assert_allclose(evaluation.per_class["f1"].iloc[:10], f1)


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


def test_evaluate_refuses_classes_the_model_does_not_know(digits_run, tmp_path):
    data = image_folder(tmp_path / "other", classes=("0", "cat"), per_class=2)
    result = runner.invoke(app, ["evaluate", str(digits_run), str(data), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "classes the model was not trained on: cat" in result.output
