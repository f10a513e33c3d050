"""Multi-label data: label sets in, sigmoids and thresholds, the metrics, and every command that reads a run."""

from __future__ import annotations

import base64
import json
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from transfer.outputs import layout
from transfer.cli import app
from transfer.metrics.multilabel import choose_thresholds, measure
from tests.helpers import assert_picture

runner = CliRunner()
NAMES = ["cat", "dog", "fox"]


def test_the_metrics_against_scikit_learns_on_a_hand_made_case():
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_score, recall_score

    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1], [1, 0, 1]])
    scores = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.3], [0.2, 0.4, 0.1], [0.3, 0.8, 0.45], [0.55, 0.1, 0.7]])
    thresholds = np.array([0.5, 0.5, 0.5])
    summary, per_label = measure(scores, targets, thresholds, NAMES)
    chosen = scores >= 0.5  # by hand: fox is missed on image 4 (0.45), nothing else is wrong
    assert chosen.sum() == 6 and (chosen != targets).sum() == 1
    assert summary["exact_match"] == pytest.approx(4 / 5) == accuracy_score(targets, chosen)
    assert summary["micro_f1"] == pytest.approx(f1_score(targets, chosen, average="micro")) == pytest.approx(2 * 6 / (6 + 7))
    assert summary["macro_f1"] == pytest.approx(f1_score(targets, chosen, average="macro"))
    assert summary["mean_average_precision"] == pytest.approx(average_precision_score(targets, scores, average="macro"))
    assert per_label["recall"].tolist() == pytest.approx(recall_score(targets, chosen, average=None).tolist())
    assert per_label["precision"].tolist() == pytest.approx(precision_score(targets, chosen, average=None).tolist())
    assert per_label["support"].tolist() == [3, 2, 2]
    assert summary["images_without_label"] == 1


def test_each_threshold_is_the_best_f1_set_between_two_validation_images():
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 3)) < [0.5, 0.3, 0.0]).astype(int)  # the third label never occurs in validation
    scores = np.clip(targets * 0.35 + rng.random((40, 3)) * 0.65, 0, 1)
    thresholds = choose_thresholds(scores, targets)
    for label in range(2):
        def f1(cut):  # written out again: the F1 of giving the label at or above `cut`
            given = scores[:, label] >= cut
            hits = (given & (targets[:, label] == 1)).sum()
            return 2 * hits / (given.sum() + targets[:, label].sum())

        best = max(f1(cut) for cut in scores[:, label])
        assert f1(thresholds[label]) == pytest.approx(best)
        assert thresholds[label] not in scores[:, label], "set between two images, not on one"
    assert thresholds[2] == 0.5, "no positive image in validation: the default"


def test_the_split_keeps_every_label_in_validation():
    from transfer.data.folders import _multi_label_split
    from transfer.metrics.multilabel import multi_hot

    rows = ["a"] * 30 + ["b;a"] * 10 + ["rare"] * 2 + ["c;rare"] * 1 + ["c"] * 5 + [""] * 8
    examples = pd.DataFrame({"path": [f"{i}.png" for i in range(len(rows))], "label": rows})
    for seed in range(5):
        split = np.array(_multi_label_split(examples, 0.2, seed))
        targets = multi_hot(examples["label"], ["a", "b", "c", "rare"])
        assert (targets[split == "val"].sum(axis=0) >= 1).all() and (targets[split == "train"].sum(axis=0) >= 1).all()
        assert 0.15 <= (split == "val").mean() <= 0.3


def test_a_multi_label_epoch_is_judged_by_its_validation_map_not_its_yes_no_accuracy():
    from transfer.training.callbacks import SELECTION, SelectionScore

    # yes/no accuracy at 0.5 barely moves when most images lack a label: the mAP is what improved
    earlier = {"val_accuracy": 0.66, "val_map": 0.55, "val_loss": 0.60}
    later = {"val_accuracy": 0.65, "val_map": 0.80, "val_loss": 0.50}
    for logs in (earlier, later):
        SelectionScore().on_epoch_end(0, logs)
    assert earlier[SELECTION] == pytest.approx(1 - 0.55 + 0.60 / 1000)
    assert later[SELECTION] == pytest.approx(1 - 0.80 + 0.50 / 1000)
    assert later[SELECTION] < earlier[SELECTION], "the later epoch, whose mAP is higher, is the better one"
    single = {"val_accuracy": 0.9, "val_loss": 0.3}  # a single-label stage keeps its accuracy
    SelectionScore().on_epoch_end(0, single)
    assert single[SELECTION] == pytest.approx(1 - 0.9 + 0.3 / 1000)


def test_the_stages_map_is_scikit_learns_mean_average_precision():
    from sklearn.metrics import average_precision_score

    from transfer.training.callbacks import mean_average_precision

    rng = np.random.default_rng(3)
    targets = (rng.random((80, 4)) < 0.4).astype(int)
    scores = np.clip(targets * 0.3 + rng.random((80, 4)) * 0.7, 0, 1)
    # Keras interpolates the precision-recall curve over 200 thresholds; scikit-learn's steps
    assert mean_average_precision(scores, targets) == pytest.approx(average_precision_score(targets, scores, average="macro"), abs=0.01)
    assert mean_average_precision(targets.astype(float), targets) == pytest.approx(1.0, abs=1e-3)


def test_a_labels_manifest_gives_sorted_label_sets_and_negative_examples(tmp_path):
    from tests.helpers import write_png
    from transfer.data.sources import read_manifest

    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / name)
    (tmp_path / "tags.csv").write_text("path,labels\na.png,dog; cat\nb.png,\nc.png,fox\n")
    listing = read_manifest(tmp_path / "tags.csv")
    assert listing.multi_label and listing.class_names == ["cat", "dog", "fox"]
    assert listing.files["label"].tolist() == ["cat;dog", "", "fox"]


# --- A multi-label run through every command ------------------------------------------------------


@pytest.mark.slow
def test_a_multi_label_run_predicts_evaluates_and_exports_its_label_sets(shapes_multi_run, shapes_multi_dir, tmp_path):
    config = json.loads((shapes_multi_run / layout.CONFIG).read_text())
    metrics = json.loads((shapes_multi_run / layout.METRICS).read_text())
    assert config["multi_label"] and set(config["thresholds"]) == set(NAMES_SHAPES)
    assert (shapes_multi_run / layout.LABELS).read_text().split() == sorted(NAMES_SHAPES)
    thresholds = np.array([config["thresholds"][name] for name in sorted(NAMES_SHAPES)])
    split = pd.read_csv(shapes_multi_run / layout.SPLIT, keep_default_na=False)
    assert list(split.columns) == ["path", "labels", "split"], "a manifest train --manifest reads back as multi-label"

    images = sorted((shapes_multi_dir / "images").iterdir())[:12]
    result = runner.invoke(app, ["predict", str(shapes_multi_run), *map(str, images), "--format", "json"])
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)
    for entry in predicted:  # every label at or above its threshold, and only those
        scores = {p["label"]: p["probability"] for p in entry["predictions"]}
        assert entry["labels"] == [name for name in sorted(scores, key=scores.get, reverse=True)
                                   if scores[name] >= config["thresholds"][name]]
        assert entry["answer"] == ";".join(entry["labels"])

    test = shapes_multi_dir / "test.csv"
    table = pd.read_csv(shapes_multi_dir / "labels.csv", keep_default_na=False)
    table.assign(path=[str(shapes_multi_dir / p) for p in table["path"]]).to_csv(test, index=False)
    result = runner.invoke(app, ["evaluate", str(shapes_multi_run), "--manifest", str(test), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "eval" / layout.METRICS).read_text())
    scored = runner.invoke(app, ["predict", str(shapes_multi_run), str(shapes_multi_dir / "images"), "--format", "json", "--top-k", "4"])
    rows = {e["path"]: {p["label"]: p["probability"] for p in e["predictions"]} for e in json.loads(scored.stdout)}
    from sklearn.metrics import accuracy_score, average_precision_score

    truth = np.array([[name in labels.split(";") for name in sorted(NAMES_SHAPES)] for labels in table["labels"]], int)
    probabilities = np.array([[rows[str(shapes_multi_dir / p)][name] for name in sorted(NAMES_SHAPES)] for p in table["path"]])
    assert evaluated["mean_average_precision"] == pytest.approx(average_precision_score(truth, probabilities, average="macro"), abs=1e-6)
    assert evaluated["exact_match"] == pytest.approx(accuracy_score(truth, probabilities >= thresholds))
    assert_picture(tmp_path / "eval" / layout.PRECISION_RECALL_PNG)
    val = split[split["split"] == "val"]  # the run's own measure of its validation images, against predict's scores
    val_truth = np.array([[name in labels.split(";") for name in sorted(NAMES_SHAPES)] for labels in val["labels"]], int)
    val_scores = np.array([[rows[str(Path(p).resolve())][name] for name in sorted(NAMES_SHAPES)] for p in val["path"]])
    assert metrics["val_accuracy"] == pytest.approx(accuracy_score(val_truth, val_scores >= thresholds), abs=1e-6)
    assert metrics["val_map"] == pytest.approx(average_precision_score(val_truth, val_scores, average="macro"), abs=1e-3)

    for fmt in ("savedmodel", "litert", "onnx"):
        out = tmp_path / f"export-{fmt}"
        result = runner.invoke(app, ["export", str(shapes_multi_run), "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0 and "label-set agreement with the Keras model 1.0000" in result.output, result.output
        target = out if fmt == "savedmodel" else out / layout.EXPORT_FILES[fmt]
        again = runner.invoke(app, ["predict", str(target), *map(str, images), "--format", "json"])
        assert [e["labels"] for e in json.loads(again.stdout)] == [e["labels"] for e in predicted], fmt
    import tensorflow as tf

    outputs = tf.saved_model.load(str(tmp_path / "export-savedmodel")).signatures["serving_default"](
        images=tf.constant([p.read_bytes() for p in images]))
    given = [[label.decode() for label in row if label] for row in outputs["labels"].numpy()]
    assert given == [e["labels"] for e in predicted], "the SavedModel's own outputs: the labels given, then empty places"
    assert [a.decode() for a in outputs["answer"].numpy()] == [e["answer"] for e in predicted]

    result = runner.invoke(app, ["report", str(shapes_multi_run), "--gradcam", "2", "--out", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert f'{metrics["val_map"]:.1%}</span> validation mean average precision' in page
    assert "Precision and recall per label" in page and "Decisions per label" in page and "Grad-CAM" in page


NAMES_SHAPES = ["circle", "cross", "square", "triangle"]


@pytest.mark.slow
def test_the_server_answers_label_sets_and_none_for_an_image_with_no_label(shapes_multi_run, shapes_multi_dir, tmp_path):
    from tests.test_serving import Client, _free_port

    port, threshold = _free_port(), 0.97
    process = subprocess.Popen([sys.executable, "-m", "transfer.cli", "serve", str(shapes_multi_run), "--port", str(port),
                                "--model-name", "shapes", "--threshold", str(threshold)],
                               stdout=open(tmp_path / "log", "w"), stderr=subprocess.STDOUT)
    client = Client(port, "shapes")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "log").read_text()[-2000:]
            assert time.monotonic() < deadline
            try:
                if client.request("GET", "/v1/models/shapes", key=None)[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        table = pd.read_csv(shapes_multi_dir / "labels.csv", keep_default_na=False)
        empty = shapes_multi_dir / table.loc[table["labels"] == "", "path"].iloc[0]  # an image without a shape
        images = [empty, *(shapes_multi_dir / p for p in table["path"][:5])]
        status, answer = client.predict({"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in images]}, key=None)
        assert status == 200, answer
        for entry in answer["predictions"]:
            scores = dict(zip(NAMES_SHAPES, entry["scores"]))
            expected = [name for name in sorted(scores, key=scores.get, reverse=True) if scores[name] >= threshold]
            assert entry["labels"] == expected and entry["probabilities"] == [scores[n] for n in expected]
            assert entry["answer"] == ";".join(expected)
        assert answer["predictions"][0]["labels"] == [] and answer["predictions"][0]["answer"] == ""
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_a_frozen_real_backbone_with_one_logistic_regression_per_label_separates_the_shapes(shapes_multi_dir, tmp_path):
    from pathlib import Path

    lite0 = Path(__file__).resolve().parents[2] / "shared" / "data" / "efficientnet_lite0" / "efficientnet_lite0_notop.keras"
    result = runner.invoke(app, ["train", "--manifest", str(shapes_multi_dir / "labels.csv"), "--backbone", str(lite0),
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "The manifest has a labels column: multi-label training" in result.output
    metrics = json.loads((tmp_path / "run" / layout.METRICS).read_text())
    assert metrics["best_stage"] == "logistic" and metrics["val_map"] > 0.9, metrics


@pytest.mark.slow
def test_a_short_default_lenet_run_finds_the_shapes_well_above_chance(shapes_multi_dir, tmp_path):
    """LeNet-5 from scratch with the default recipe (10 epochs on 128 images), scored on 80 images of
    another draw, which chose nothing: a label's average precision by chance is its share of the images."""
    from transfer.datasets.shapes_multi import materialize
    from transfer.evaluation.evaluate import evaluate
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    test_dir = materialize(tmp_path / "test", images=80, seed=5)
    test = pd.read_csv(test_dir / "labels.csv", keep_default_na=False).rename(columns={"labels": "label"})
    test["path"] = [str(test_dir / path) for path in test["path"]]
    options = TrainOptions(backbone="lenet", seed=0, manifest=str(shapes_multi_dir / "labels.csv"))
    run = train(None, tmp_path / "runs" / "lenet", options, verbose=0).run_dir
    summary = evaluate(run, test).summary
    chance = np.mean([[name in labels.split(";") for name in sorted(NAMES_SHAPES)] for labels in test["label"]])
    assert chance < 0.5
    assert summary["mean_average_precision"] > chance + 0.2, (summary["mean_average_precision"], chance)
