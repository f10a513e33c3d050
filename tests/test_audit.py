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

from tests.helpers import few_photos, headless_chromium
from transfer import layout
from transfer.audit import find_issues, logistic_out_of_fold
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
    for i in flipped:  # the suggestion is the true class, and the score is 1 - P(given), out of fold
        row = issues[issues["path"] == f"img{i:03d}.png"].iloc[0]
        assert row["suggested"] == str(truth[i]) and row["given"] == str(given[i])
        assert row["score"] == pytest.approx(1 - probabilities[i, given[i]])
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

    clean = pd.read_csv(out / layout.CLEAN_CSV)
    folds = pd.read_csv(out / layout.FOLDS_CSV)
    assert list(clean.columns) == ["path", "label"]
    assert set(clean["path"]) == set(folds["path"]) - set(issues["path"])
    oof = pd.read_csv(out / layout.OUT_OF_FOLD_CSV)
    assert np.allclose(oof[["p:ants", "p:bees"]].sum(axis=1), 1)
    assert "Next: look at the top of" in output and f"transfer train --manifest {out}/clean.csv" in output

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
        layout.SKIPPED]), "the folds' runs are not left behind"
    assert result.output.count("trained on") == 4, "3 folds, and once on every image for the feature space"


def test_without_cleanlab_the_audit_names_the_extra_and_writes_nothing(tmp_path, monkeypatch):
    from tests.helpers import image_folder

    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab raises ImportError
    data = image_folder(tmp_path / "data")
    result = runner.invoke(app, ["audit", str(data), "--backbone", "lenet", "--out", str(tmp_path / "audit")])
    assert result.exit_code == 1 and "pip install 'keras-transfer[audit]'" in result.output, result.output
    assert not (tmp_path / "audit").exists()
