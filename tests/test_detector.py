"""The open-set detector inside the model (`transfer.models.detector`) and what train, predict and
evaluate do with it: each score against NumPy's (`transfer.metrics.novelty`) on features computed by
training's own extractor."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from transfer.cli import app
from transfer.metrics import novelty
from transfer.models.detector import NoveltyScore, with_novelty
from transfer.outputs import artifacts, layout

runner = CliRunner()


def _clusters(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(60, 12))
    labels = np.repeat([0, 1, 2], 20)
    features[labels == 1] += 3.0
    queries = np.vstack([rng.normal(size=(8, 12)) * 3, np.zeros((1, 12))])  # the last: a zero feature
    return features, labels, queries


@pytest.mark.parametrize("method, k", [("knn", 1), ("knn", 4), ("mahalanobis", 0), ("mahalanobis_l2", 0)])
def test_the_layer_computes_numpys_score_and_survives_saving(method, k, tmp_path):
    features, labels, queries = _clusters()
    detector = novelty.fit_threshold(method, features, labels)
    if k:  # a larger bank's k
        detector = novelty.NoveltyDetector(method, detector.threshold, detector.share, detector.state, k)
    expected = detector.score(queries)
    inputs = keras.Input((12,))
    model = keras.Model(inputs, NoveltyScore(detector.method, detector.k, detector.state, name="novelty")(inputs))
    np.testing.assert_allclose(np.asarray(model(queries.astype(np.float32))), expected, rtol=1e-4, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(queries.astype(np.float32))), expected, rtol=1e-4, atol=1e-5)
    if method == "knn":
        assert expected[-1] == 1.0, "a zero feature lies at distance 1 from every unit row"


def test_a_classifier_with_its_detector_answers_its_own_scores_and_the_novelty_of_its_features():
    """LeNet from scratch (its feature layer inside the baseline) and a backbone under a head (its pooled
    output): `with_novelty` gives the classifier's probabilities unchanged, and NumPy's novelty of the
    features training's extractor (`frozen_extractor`) computes."""
    from transfer.models.classifier import build_classifier
    from transfer.models.registry import get_backbone
    from transfer.training.features import frozen_extractor

    pixels = np.random.default_rng(1).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    for name, transfers in (("lenet", False), ("mobilenetv3small", True)):
        spec = get_backbone(name)
        model = build_classifier(spec, 3, 32, None)
        features = np.asarray(frozen_extractor(model, spec, transfers)(pixels, training=False), np.float64)
        bank = np.random.default_rng(2).normal(size=(20, features.shape[1])) + features.mean(axis=0)
        detector = novelty.NoveltyDetector("knn", 0.5, 0.02, novelty.fit_state("knn", bank, np.zeros(20)), 2)
        both = with_novelty(model, spec, transfers, detector)(pixels)
        np.testing.assert_allclose(both["scores"], model(pixels, training=False), atol=1e-6)
        np.testing.assert_allclose(both["novelty"], detector.score(features), rtol=1e-4, atol=1e-5)


def test_a_run_records_the_detector_of_its_training_images(digits_run):
    """The bank is every training image's features (training's extractor, normalised), the threshold the
    98% quantile of their held-out scores, and config.json says so."""
    from transfer.models.registry import run_backbone
    from transfer.models.saving import load_run_model
    from transfer.training.features import extract_features, frozen_extractor

    run = artifacts.Run.open(digits_run)
    detector, config = run.detector(), run.config()
    split = run.split()
    train = split.loc[split["split"] == "train", "path"].tolist()
    extractor = frozen_extractor(load_run_model(run), run_backbone(config), False)
    np.testing.assert_allclose(detector.state["bank"], novelty.normalise(extract_features(extractor, train, 32)), atol=1e-5)
    assert len(detector.held_out_scores) == len(train) and detector.method == "knn"
    assert detector.threshold == pytest.approx(np.quantile(detector.held_out_scores, 0.98))
    assert config["unknown_detector"] == {**detector.to_dict(), "images": len(train)}


def test_predict_and_evaluate_answer_unknown_beyond_the_threshold(digits_run, digits_dir, tmp_path):
    noise = tmp_path / "other" / "noise.png"
    noise.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(noise)
    digit = sorted((digits_dir / "3").iterdir())[0]
    printed = runner.invoke(app, ["predict", str(digits_run), str(noise), str(digit), "--format", "json"])
    assert printed.exit_code == 0, printed.output
    far, known = json.loads(printed.stdout)
    threshold = artifacts.Run.open(digits_run).detector().threshold
    assert (far["answer"], far["why_unknown"]) == ("unknown", "novel") and far["novelty"] > threshold
    assert far["predictions"][0]["label"] in [str(d) for d in range(10)], "the ranked labels are kept"
    assert known["novelty"] <= threshold and "why_unknown" not in known

    out = tmp_path / "evaluation"
    evaluated = runner.invoke(app, ["evaluate", str(digits_run), str(digits_dir), "--unknown-dir", str(noise.parent), "--out", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"novelty (unknown > {threshold:.3g})" in " ".join(runner.invoke(app, ["predict", str(digits_run), str(noise)]).stdout.split())
    overlapping = runner.invoke(app, ["evaluate", str(digits_run), str(digits_dir), "--unknown-dir", str(digits_dir / "3"),
                                      "--out", str(tmp_path / "overlap")])
    told = " ".join(overlapping.stderr.split())
    assert overlapping.exit_code == 0 and "were in the training split of" in told and "are also among the labelled images evaluated" in told
    table = pd.read_csv(out / layout.UNKNOWN_CSV)
    assert table.loc[table["path"] == str(digit), "novelty"].item() == pytest.approx(known["novelty"], abs=1e-3)  # float32 near 0
    assert table.loc[table["set"] == "other", "novelty"].item() == pytest.approx(far["novelty"], abs=1e-5)
    summary = json.loads((out / layout.METRICS).read_text())
    in_class = table[table["set"] == "in_class"]
    assert summary["in_class_unknown"] == pytest.approx(np.mean(in_class["novelty"] > threshold))
    assert summary["unknown_auroc"] == pytest.approx(np.mean(in_class["novelty"] < far["novelty"]))  # one far image
    assert summary["other_unknown"] == 1.0 and (out / layout.UNKNOWN_PNG).stat().st_size > 0


def test_a_multi_label_run_has_a_detector_over_all_its_images(shapes_multi_run, shapes_multi_dir):
    run = artifacts.Run.open(shapes_multi_run)
    split = run.split()
    assert len(run.detector().held_out_scores) == int((split["split"] == "train").sum())
    image = sorted(shapes_multi_dir.rglob("*.png"))[0]
    printed = runner.invoke(app, ["predict", str(shapes_multi_run), str(image), "--format", "json"])
    assert printed.exit_code == 0 and "novelty" in json.loads(printed.stdout)[0], printed.output


def test_unknown_off_records_no_detector(tmp_path):
    from tests.helpers import image_folder

    data = image_folder(tmp_path / "data", per_class=12)
    trained = runner.invoke(app, ["train", str(data), "--backbone", "lenet", "--epochs", "1", "--no-augment", "--unknown", "off",
                                  "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    assert not (tmp_path / "run" / layout.NOVELTY).exists()
    assert json.loads((tmp_path / "run" / layout.CONFIG).read_text())["unknown_detector"] == {"method": None, "reason": "--unknown off"}
