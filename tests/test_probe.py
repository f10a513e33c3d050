"""`transfer probe` and `train --backbone auto`: the scores against direct computations, the curve's
subsets, and the choice in a case whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers import assert_picture, image_folder
from transfer.outputs import layout
from transfer.cli import app
from transfer.metrics.transferability import curve_subsets, log_me, power_law, probe_scores

runner = CliRunner()


def test_log_me_is_the_evidence_maximised_directly():
    """The fixed-point iteration reaches the maximum of the published log-evidence formula, found
    here by a general-purpose optimizer on dense matrices."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    features = rng.normal(size=(60, 8)) + labels[:, None] * 0.8
    n, d = features.shape

    def log_evidence(params, y):  # You et al. 2021, eq. 2, written out with a dense A
        alpha, beta = np.exp(params)
        a = alpha * np.eye(d) + beta * features.T @ features
        m = beta * np.linalg.solve(a, features.T @ y)
        return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                - beta / 2 * np.sum((y - features @ m) ** 2) - alpha / 2 * m @ m - 0.5 * np.linalg.slogdet(a)[1])

    best = []
    for k in range(3):
        y = (labels == k).astype(float)
        found = min((minimize(lambda p: -log_evidence(p, y), start, method="Nelder-Mead",
                              options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000}) for start in ([0, 0], [2, 1], [-2, 2])),
                    key=lambda result: result.fun)
        best.append(-found.fun / n)
    assert log_me(features, labels) == pytest.approx(np.mean(best), abs=1e-5)
    assert log_me(features, labels) > log_me(rng.normal(size=(60, 8)), labels), "features that carry the labels score higher"


def test_the_probe_scores_are_scikit_learns_cross_validation_on_the_same_folds():
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import PredefinedSplit, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 30)
    features = rng.normal(size=(90, 12)) + labels[:, None] * np.linspace(0, 1, 12)
    folds = np.tile(np.arange(1, 6), 18)
    scores = probe_scores(features, labels, folds, 3, seed=0)
    estimator = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=5000, random_state=0))
    direct = cross_validate(estimator, features, labels, cv=PredefinedSplit(folds - 1), scoring=["accuracy", "neg_log_loss"])
    assert scores["accuracy"] == pytest.approx(direct["test_accuracy"].mean())
    assert scores["accuracy_sd"] == pytest.approx(np.std(direct["test_accuracy"], ddof=1))
    assert scores["log_loss"] == pytest.approx(-direct["test_neg_log_loss"].mean(), rel=1e-6)


def test_the_curves_subsets_are_nested_and_stratified():
    labels = np.array([0] * 30 + [1] * 12 + [2] * 25)
    subsets = curve_subsets(labels, draws=3, seed=7)
    assert sorted({n for _, n in subsets}) == [1, 2, 5, 10, 12], "as far as the smallest class goes"
    for draw in range(3):
        steps = sorted(n for d, n in subsets if d == draw)
        for small, large in zip(steps, steps[1:]):
            assert set(subsets[(draw, small)]) < set(subsets[(draw, large)])
        for n in steps:
            assert np.bincount(labels[subsets[(draw, n)]], minlength=3).tolist() == [n, n, n]
    assert not np.array_equal(subsets[(0, 5)], subsets[(1, 5)]), "draws differ"


def test_the_power_law_is_recovered():
    n = np.array([1, 2, 5, 10, 20, 50.0])
    assert power_law(n, 0.4 * n ** -0.7) == pytest.approx((0.4, 0.7))


@pytest.fixture
def two_backbones(tmp_path):
    """Red against blue-ish images, and two model files: one gives each image's mean colour (the
    classes separate), the other a constant (they cannot)."""
    import keras

    data = image_folder(tmp_path / "data", per_class=10)
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs)).save(tmp_path / "colour.keras")
    blind = keras.layers.Conv2D(4, 1, kernel_initializer="zeros", bias_initializer="ones")(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(blind)).save(tmp_path / "blind.keras")
    return data, tmp_path / "colour.keras", tmp_path / "blind.keras"


@pytest.mark.slow
def test_auto_trains_the_candidate_whose_features_separate_the_classes(two_backbones, tmp_path):
    data, colour, blind = two_backbones
    result = runner.invoke(app, ["train", str(data), "--backbone", "auto", "--backbones", f"{blind},{colour}",
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / layout.CONFIG).read_text())
    assert config["backbone"] == str(colour.resolve()) and config["probe"]["best"] == str(colour)
    ranking = config["probe"]["ranking"]
    assert [row["backbone"] for row in ranking] == [str(colour), str(blind)]
    assert ranking[0]["accuracy"] == 1.0 and ranking[1]["accuracy"] <= 0.6
    assert f"--backbone auto: {colour} wins the probe" in " ".join(result.output.split())
    reported = runner.invoke(app, ["report", str(tmp_path / "run"), "--gradcam", "0"])
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "run" / layout.REPORT).read_text()
    assert "How the backbone was chosen (--backbone auto)" in page and page.index(colour.name) < page.index(blind.name, page.index("How the backbone"))


@pytest.mark.slow
def test_probe_ranks_writes_the_curve_and_keeps_going_past_a_backbone_it_cannot_load(two_backbones, tmp_path, offline_keras):
    data, colour, blind = two_backbones
    result = runner.invoke(app, ["probe", str(data), "--backbones", f"{blind},resnet50,{colour}", "--curve", "--draws", "2",
                                 "--folds", "3", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "probe")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "probe" / layout.PROBE_CSV, keep_default_na=False)
    assert table["backbone"].tolist() == [str(colour), str(blind), "resnet50"]
    assert "Cannot download" in table.loc[2, "error"] and table.loc[0, "feature_size"] == "3"  # read as written
    curve = pd.read_csv(tmp_path / "probe" / layout.CURVE_CSV)
    assert (curve["train_images"] == 2 * curve["per_class"]).all() and set(curve["backbone"]) == {str(colour), str(blind)}
    assert "not the result of fine-tuning" in " ".join(result.output.split())
    summary = json.loads((tmp_path / "probe" / layout.CONFIG).read_text())
    assert summary["best"] == str(colour) and summary["margin"] > 0.3
    for picture in (layout.PROBE_PNG, layout.CURVE_PNG):
        assert_picture(tmp_path / "probe" / picture)


def test_the_probe_table_keeps_two_long_model_paths_apart(monkeypatch):
    """A terminal-wide table cut long paths to the same `/models/...`; each row names its own file."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    import transfer.cli.printers as printers

    shared = "/data/checkpoints/experiments/2026/efficientnet_variants/"
    names = [shared + "teacher_distilled/model.keras", shared + "student_pruned/model.keras"]
    table = pd.DataFrame({"backbone": names, "accuracy": [0.9, 0.8], "accuracy_sd": [0.01, 0.02], "log_loss": [0.3, 0.4],
                          "log_me": [1.0, 0.5], "feature_size": [1280, 1280], "pass_seconds": [1.0, 1.0],
                          "images_per_second": [50.0, 50.0], "error": ["", ""]})
    out = io.StringIO()
    monkeypatch.setattr(printers, "results", Console(file=out, width=100))
    printers.print_probe(SimpleNamespace(table=table, curve=pd.DataFrame(), path="probe", summary={"best": names[0], "note": ""}))
    rows = [line for line in out.getvalue().splitlines() if "0.9000" in line or "0.8000" in line]
    assert len(rows) == 2
    assert ".../teacher_distilled/model.keras" in rows[0] and ".../student_pruned/model.keras" in rows[1], out.getvalue()
