"""`transfer audit`: label issues, near-duplicates and outliers found where they were put, and the data untouched."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers import few_photos, headless_chromium, write_png
from transfer.metrics import label_noise
from transfer.outputs import layout
from transfer.selection.audit import ORIGINAL_CSV, find_issues, logistic_out_of_fold, without_flags
from transfer.cli import app

runner = CliRunner()
LITE0 = Path(__file__).resolve().parents[2] / "shared" / "data" / "efficientnet_lite0" / "efficientnet_lite0_notop.keras"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its content's SHA-256 and its mode, by relative path (folders too)."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            state[relative] = (hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir", path.stat().st_mode)
    return state


def clusters(seed: int = 0, per_class: int = 40, dims: int = 16):
    """Three well-separated Gaussian classes; `(features, true labels)`."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dims)) * 4
    labels = np.repeat(np.arange(3), per_class)
    return centres[labels] + rng.normal(size=(len(labels), dims)), labels


# --- The method, on features whose answers are known --------------------------------------------


def test_flipped_labels_a_near_duplicate_and_an_outlier_are_found():
    features, truth = clusters()
    given = truth.copy()
    flipped = [3, 50, 97, 110]
    given[flipped] = (truth[flipped] + 1) % 3
    features[7] = features[8] + 1e-4  # a near copy of image 8
    features[60] = np.full(features.shape[1], 25.0) * np.sign(np.arange(features.shape[1]) % 2 - 0.5)  # far from everyone
    folds = np.arange(len(given)) % 5 + 1
    probabilities = logistic_out_of_fold(features, given, folds, 3, seed=0)
    images = pd.DataFrame({"path": [f"img{i:03d}.png" for i in range(len(given))], "label": [str(c) for c in given]})
    table = find_issues(images, given, probabilities, features, ["0", "1", "2"])

    issues = table[table["kind"] == "label_issue"]
    found = {int(path[3:6]) for path in issues["path"]}
    assert set(flipped) <= found and len(found - set(flipped)) <= 2, found
    wrong = label_noise.fit(probabilities, given).wrong
    for i in flipped:  # the suggestion is the true class, and the score is the chance the label is wrong
        row = issues[issues["path"] == f"img{i:03d}.png"].iloc[0]
        assert row["suggested"] == str(truth[i]) and row["given"] == str(given[i])
        assert row["score"] == pytest.approx(wrong[i]) and row["score"] > 0.5
    assert list(issues["score"]) == sorted(issues["score"], reverse=True), "the surest first"

    pairs = table[table["kind"] == "near_duplicate"]
    assert [(p, o) for p, o in zip(pairs["path"], pairs["other"])] == [("img007.png", "img008.png")]
    a, b = features[7], features[8]
    assert pairs["distance"].iloc[0] == pytest.approx(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-9)

    outliers = table[table["kind"] == "outlier"]
    assert "img060.png" in set(outliers["path"])
    assert list(table["kind"]) == sorted(table["kind"], key=["label_issue", "near_duplicate", "outlier"].index)


def test_out_of_fold_probabilities_come_from_models_that_never_saw_the_image():
    """Labels that are pure noise: a model fitted on an image itself would recall its label (150
    features, 160 images), one fitted on the other folds can only guess."""
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(160, 150)), rng.integers(0, 2, 160)
    folds = np.arange(160) % 4 + 1
    probabilities = logistic_out_of_fold(features, labels, folds, 2, seed=0)
    assert np.allclose(probabilities.sum(axis=1), 1)
    assert abs(np.mean(probabilities.argmax(axis=1) == labels) - 0.5) < 0.15

    from sklearn.linear_model import LogisticRegression

    seen = LogisticRegression(C=1.0, max_iter=5000).fit(features, labels)
    assert np.mean(seen.predict(features) == labels) == 1.0, "the check itself: seeing the image recalls its label"


def flipped_clusters(separation: float, seed: int, classes: int = 4, per_class: int = 50, share: float = 0.1):
    """Gaussian classes `separation` apart, `share` of them given a random other class:
    `(out-of-fold probabilities of a 5-fold logistic regression, given labels, flipped indices)`."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 16)) * separation
    truth = np.repeat(np.arange(classes), per_class)
    features = centres[truth] + rng.normal(size=(len(truth), 16))
    given = truth.copy()
    flipped = rng.choice(len(truth), int(share * len(truth)), replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, classes, len(flipped))) % classes
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    probabilities = cross_val_predict(LogisticRegression(C=0.3, max_iter=500), features, given, cv=5, method="predict_proba")
    return probabilities, given, flipped


def audit_of(probabilities, given) -> pd.DataFrame:
    images = pd.DataFrame({"path": [f"img{i:03d}.png" for i in range(len(given))], "label": [str(c) for c in given]})
    features = np.random.default_rng(0).normal(size=(len(given), 8))
    return find_issues(images, given, probabilities, features, [str(c) for c in range(probabilities.shape[1])])


def test_a_weak_model_flags_nothing_and_advises_against_clean_csv():
    """Classes that overlap: the out-of-fold model is barely better than guessing, so confident
    learning alone flags a crowd (mostly right labels); the audit says it cannot judge."""
    probabilities, given, flipped = flipped_clusters(separation=0.35, seed=0)
    accuracy = np.mean(probabilities.argmax(axis=1) == given)
    assert accuracy < (0.25 + 1) / 2, "the check itself: a weak model"
    from cleanlab.filter import find_label_issues

    crowd = np.flatnonzero(find_label_issues(given, probabilities, n_jobs=1))
    assert len(crowd) > 2 * len(flipped) and len(set(crowd) & set(flipped)) / len(crowd) < 0.3, "the check itself"
    table = audit_of(probabilities, given)
    assert (table["kind"] == "label_issue").sum() == 0
    model = label_noise.fit(probabilities, given)
    advised, why = label_noise.advice(model, label_noise.flagged(model, crowd))
    assert not model.judged and not advised and "closer to guessing" in why and f"{accuracy:.3f}" in why


def test_the_flags_are_ranked_by_the_chance_the_label_is_wrong_computed_by_bayes_rule():
    probabilities, given, flipped = flipped_clusters(separation=1.5, seed=1)
    model = label_noise.fit(probabilities, given)
    # Independently: the noise matrix P(given | true) and Bayes' rule over the true classes, with
    # the temperature-scaled probabilities as the prior of the true class.
    k, t, e = probabilities.shape[1], model.temperature, model.noise_rate
    prior = probabilities ** (1 / t) / (probabilities ** (1 / t)).sum(axis=1, keepdims=True)
    noise = np.full((k, k), e / (k - 1)) + np.eye(k) * (1 - e - e / (k - 1))
    joint = prior * noise[:, given].T  # P(true = j, given = y_i | x_i)
    wrong = 1 - joint[np.arange(len(given)), given] / joint.sum(axis=1)
    assert model.wrong == pytest.approx(wrong, abs=1e-9)
    # ... and the fitted (T, e) is the maximum of the likelihood: no point of a grid around it is better
    def log_likelihood(t_, e_):
        q = probabilities ** (1 / t_) / (probabilities ** (1 / t_)).sum(axis=1, keepdims=True)
        q = q[np.arange(len(given)), given]
        return np.sum(np.log((1 - e_) * q + e_ / (k - 1) * (1 - q)))
    best = log_likelihood(t, e)
    assert all(log_likelihood(t * a, min(e * b, 0.74)) <= best + 1e-6 for a in (0.8, 0.95, 1.05, 1.25) for b in (0.5, 0.9, 1.1, 2))

    table = audit_of(probabilities, given)
    issues = table[table["kind"] == "label_issue"]
    index = issues["path"].str[3:6].astype(int).to_numpy()
    assert len(issues) >= len(flipped) // 2 and issues["score"].to_numpy() == pytest.approx(wrong[index])
    assert list(issues["score"]) == sorted(issues["score"], reverse=True) and (issues["score"] >= 0.5).all()


def test_the_estimated_precision_matches_the_measured_one_across_model_strengths():
    """Over 5 draws at each of two separations, the mean estimated precision of the flags is within
    0.1 of the share of them that were really flipped."""
    for separation in (0.9, 4.0):
        estimated, measured = [], []
        for seed in range(5):
            probabilities, given, flipped = flipped_clusters(separation, seed)
            table = audit_of(probabilities, given)
            issues = table[table["kind"] == "label_issue"]
            if len(issues):
                index = issues["path"].str[3:6].astype(int)
                estimated.append(issues["score"].mean())
                measured.append(np.isin(index, flipped).mean())
        assert len(estimated) == 5 and abs(np.mean(estimated) - np.mean(measured)) < 0.1, (separation, estimated, measured)


def test_clean_csv_drops_flagged_training_images_and_keeps_every_validation_image():
    original = pd.DataFrame({"path": list("abcdef"), "label": list("xxxyyy"), "split": ["train", "val", "train", "train", "val", "train"]})
    table = pd.DataFrame({"path": ["a", "b", "f", "c"], "kind": ["label_issue", "label_issue", "label_issue", "outlier"]})
    clean = without_flags(original, table)
    assert clean["path"].tolist() == ["b", "c", "d", "e"]
    assert clean[clean["split"] == "val"].reset_index(drop=True).equals(original[original["split"] == "val"].reset_index(drop=True))


@pytest.fixture
def colour_photos(tmp_path):
    """Red and blue squares (a little varied), 20 of each, two of each filed under the other colour;
    and a model file whose features are each image's mean colour: `(folder, backbone, flipped)`."""
    import keras

    rng = np.random.default_rng(0)
    flipped = set()
    for colour, other, base in (("red", "blue", (200, 40, 40)), ("blue", "red", (40, 40, 200))):
        for j in range(20):
            folder = other if j < 2 else colour
            path = write_png(tmp_path / "data" / folder / f"{colour}{j}.png", color=tuple(int(c) for c in base + rng.integers(-30, 30, 3)))
            if j < 2:
                flipped.add(str(path))
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs)).save(tmp_path / "colour.keras")
    return tmp_path / "data", tmp_path / "colour.keras", flipped


def test_the_command_flags_the_flips_states_its_precision_and_keeps_the_validation_images(colour_photos, tmp_path):
    data, backbone, flipped = colour_photos
    out = tmp_path / "audit"
    result = runner.invoke(app, ["audit", str(data), "--backbone", str(backbone), "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / layout.AUDIT_CSV, keep_default_na=False)
    issues = table[table["kind"] == "label_issue"]
    assert set(issues["path"]) == flipped
    summary = pd.read_json(out / layout.CONFIG, typ="series")
    assert summary["estimated_precision"] == pytest.approx(issues["score"].mean())
    output = " ".join(result.output.split())
    assert f"Estimated precision of the label issues {summary['estimated_precision']:.2f}" in output
    assert f"out-of-fold accuracy {summary['out_of_fold_accuracy']:.4f}" in output

    original, clean = pd.read_csv(out / ORIGINAL_CSV), pd.read_csv(out / layout.CLEAN_CSV)
    assert len(original) == 40 and list(clean.columns) == ["path", "label", "split"]
    # the split is the one `train` draws for this folder with the same seed
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", str(data), "--backbone", str(backbone), "--seed", "3", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    drawn = pd.read_csv(run / layout.SPLIT)
    assert set(drawn.loc[drawn["split"] == "val", "path"]) == set(original.loc[original["split"] == "val", "path"])
    val = original[original["split"] == "val"]
    assert clean[clean["split"] == "val"].reset_index(drop=True).equals(val.reset_index(drop=True))
    assert set(clean["path"]) == set(original["path"]) - (set(issues["path"]) - set(val["path"]))
    # 4 flags of 40 images at a precision near 1: clean.csv is advised, and trains
    assert summary["clean_advised"] and f"transfer train --manifest {out}/clean.csv" in output
    rerun = runner.invoke(app, ["train", "--manifest", str(out / layout.CLEAN_CSV), "--backbone", str(backbone),
                                "--seed", "3", "--out", str(tmp_path / "clean-run")])
    assert rerun.exit_code == 0, rerun.output
    again = pd.read_csv(tmp_path / "clean-run" / layout.SPLIT)
    assert set(again.loc[again["split"] == "val", "path"]) == set(val["path"])


def test_the_command_says_it_cannot_judge_with_features_that_cannot_tell_the_classes_apart(colour_photos, tmp_path):
    """The same photos through a model file that gives every image the same features: nothing
    flagged, clean.csv not advised, and why."""
    import keras

    data, _, _ = colour_photos
    inputs = keras.Input((32, 32, 3))
    blind = keras.layers.Conv2D(4, 1, kernel_initializer="zeros", bias_initializer="ones")(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(blind)).save(tmp_path / "blurred.keras")
    out = tmp_path / "audit"
    result = runner.invoke(app, ["audit", str(data), "--backbone", str(tmp_path / "blurred.keras"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_json(out / layout.CONFIG, typ="series")
    table = pd.read_csv(out / layout.AUDIT_CSV, keep_default_na=False)
    output = " ".join(result.output.split())
    assert summary["out_of_fold_accuracy"] < 0.75 and not summary["judged"] and not summary["clean_advised"]
    assert (table["kind"] == "label_issue").sum() == 0 and "cannot judge" in output and "closer to guessing" in output
    assert "transfer train --manifest" not in output


# --- The command, on real photos and a real pretrained backbone -----------------------------------


@pytest.fixture(scope="module")
def flipped_photos(hymenoptera, tmp_path_factory):
    """20 ants and 20 bees, 3 of each moved into the other's folder: `(folder, {path: true class})`."""
    root = few_photos(hymenoptera / "train", tmp_path_factory.mktemp("audit") / "photos", per_class=23)
    flipped = {}
    for true, wrong in (("ants", "bees"), ("bees", "ants")):
        for path in sorted((root / true).iterdir())[:3]:
            moved = root / wrong / f"flipped_{path.name}"
            path.rename(moved)
            flipped[str(moved)] = true
    return root, flipped


@pytest.fixture(scope="module")
def lite0_audit(flipped_photos, tmp_path_factory):
    root, flipped = flipped_photos
    before = snapshot(root)
    out = tmp_path_factory.mktemp("audit-out") / "audit"
    result = runner.invoke(app, ["audit", str(root), "--backbone", str(LITE0), "--cache-dir", str(out.parent / "cache"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output, before


@pytest.mark.slow
def test_the_audit_finds_labels_flipped_in_real_photos_and_leaves_the_data_as_it_was(flipped_photos, lite0_audit):
    root, flipped = flipped_photos
    out, output, before = lite0_audit
    assert snapshot(root) == before, "the data folder is unchanged byte for byte"
    table = pd.read_csv(out / layout.AUDIT_CSV, keep_default_na=False)
    issues = table[table["kind"] == "label_issue"]
    caught = {path: row.suggested for path, row in zip(issues["path"], issues.itertuples()) if path in flipped}
    assert len(caught) >= 5, (caught, issues)  # ImageNet features tell ants from bees: the flips are found
    assert all(suggested == flipped[path] for path, suggested in caught.items())
    assert len(issues) <= 6 + 4, "a few real doubtful photos, not a flood"

    clean, original = pd.read_csv(out / layout.CLEAN_CSV), pd.read_csv(out / ORIGINAL_CSV)
    folds = pd.read_csv(out / layout.FOLDS_CSV)
    assert list(clean.columns) == ["path", "label", "split"] and set(original["path"]) == set(folds["path"])
    val = set(original.loc[original["split"] == "val", "path"])
    assert set(clean["path"]) == set(folds["path"]) - (set(issues["path"]) - val)
    oof = pd.read_csv(out / layout.OUT_OF_FOLD_CSV)
    assert np.allclose(oof[["p:ants", "p:bees"]].sum(axis=1), 1)
    summary = pd.read_json(out / layout.CONFIG, typ="series")
    advised = f"transfer train --manifest {out}/clean.csv" in " ".join(output.split())
    assert "Next: look at the top of" in output and advised == summary["clean_advised"]

    run = out.parent / "clean-run"  # the manifest trains as it is
    trained = runner.invoke(app, ["train", "--manifest", str(out / layout.CLEAN_CSV), "--backbone", str(LITE0),
                                  "--cache-dir", str(out.parent / "cache"), "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    assert len(pd.read_csv(run / layout.SPLIT)) == len(clean)


@pytest.mark.slow
@pytest.mark.browser
def test_the_audit_page_shows_each_flagged_photo_beside_its_classes(lite0_audit):
    out, _, _ = lite0_audit
    table = pd.read_csv(out / layout.AUDIT_CSV, keep_default_na=False)
    page = (out / layout.AUDIT_HTML).read_text()
    assert "http://" not in page and "https://" not in page, "self-contained"

    from selenium.webdriver.common.by import By

    with headless_chromium() as driver:
        driver.get((out / layout.AUDIT_HTML).as_uri())
        broken = driver.execute_script("return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        cards = driver.find_elements(By.CSS_SELECTOR, ".label-issue")
        first = cards[0].text
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        per_card = [len(card.find_elements(By.TAG_NAME, "img")) for card in cards]
    issues = table[table["kind"] == "label_issue"]
    assert broken == 0 and len(cards) == len(issues)
    assert per_card == [7] * len(cards), "the flagged photo, 3 of its given class and 3 of the suggested one"
    top = issues.iloc[0]
    assert f"given: {top['given']}" in first and f"suggested: {top['suggested']}" in first and Path(top["path"]).name in first
    assert headings == [f"Labels to check ({len(issues)})", f"Near-duplicates ({(table['kind'] == 'near_duplicate').sum()} pairs)",
                        f"Outliers ({(table['kind'] == 'outlier').sum()})"]


@pytest.mark.slow
def test_a_baseline_is_trained_on_each_fold_and_finds_flipped_digits(digits_dir, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(digits_dir, root)
    flipped = {}
    for true, wrong in (("1", "7"), ("3", "8"), ("0", "6")):
        path = sorted((root / true).iterdir())[0]
        moved = root / wrong / f"flipped_{path.name}"
        path.rename(moved)
        flipped[str(moved)] = true
    out = tmp_path / "audit"
    result = runner.invoke(app, ["audit", str(root), "--backbone", "lenet", "--flip", "none", "--epochs", "4", "--folds", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / layout.AUDIT_CSV, keep_default_na=False)
    issues = table[table["kind"] == "label_issue"]
    caught = dict(zip(issues["path"], issues["suggested"]))
    assert sum(caught.get(path) == true for path, true in flipped.items()) >= 2, issues
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([
        layout.AUDIT_CSV, layout.AUDIT_HTML, layout.CLEAN_CSV, layout.CONFIG, layout.FOLDS_CSV, layout.OUT_OF_FOLD_CSV,
        layout.SKIPPED, ORIGINAL_CSV]), "the folds' runs are not left behind"
    assert result.output.count("trained on") == 4, "3 folds, and once on every image for the feature space"


def test_without_cleanlab_the_audit_names_the_extra_and_writes_nothing(tmp_path, monkeypatch):
    from tests.helpers import image_folder

    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab raises ImportError
    data = image_folder(tmp_path / "data")
    result = runner.invoke(app, ["audit", str(data), "--backbone", "lenet", "--out", str(tmp_path / "audit")])
    assert result.exit_code == 1 and "pip install 'keras-transfer[audit]'" in result.output, result.output
    assert not (tmp_path / "audit").exists()
