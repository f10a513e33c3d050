"""report.html: its test section, checked in the HTML text; the page opened in a real browser."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import headless_chromium
from transfer.outputs import artifacts, layout
from transfer.cli import app

runner = CliRunner()


def _unseen_digits(digits_dir, root, per_class):
    """Digits the `digits_run` fixture never saw (neither trained nor validated on): the next
    `per_class` of each digit after the fixture's first 60."""
    from transfer.datasets.digits import materialize

    more = materialize(root, per_class=60 + per_class)
    for png in list(more.glob("*/*.png")):
        if (digits_dir / png.parent.name / png.name).exists():
            png.unlink()
    return more


def test_report_with_a_test_folder_shows_its_numbers_beside_validation(digits_run, digits_dir, tmp_path):
    """`report --test DIR`: the page holds validation's sections and the test folder's, labelled; the
    test numbers are those `transfer evaluate` writes for the same folder, the validation numbers
    those of training; the evaluation's files (reliability diagram included) are in RUN/evaluation."""
    run = shutil.copytree(digits_run, tmp_path / "run")  # the shared fixture stays as it is
    test = _unseen_digits(digits_dir, tmp_path / "unseen", per_class=4)
    other = tmp_path / "other"
    other.mkdir()
    for seed in range(3):  # noise: outside the classes
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(other / f"{seed}.png")
    result = runner.invoke(app, ["report", str(run), "--test", str(test), "--unknown-dir", str(other), "--gradcam", "0", "--errors", "3"])
    assert result.exit_code == 0, result.output
    page = (run / layout.REPORT).read_text()

    evaluated = runner.invoke(app, ["evaluate", str(run), str(test), "--out", str(tmp_path / "evaluated")])
    assert evaluated.exit_code == 0, evaluated.output
    expected = json.loads((tmp_path / "evaluated" / layout.METRICS).read_text())
    trained = json.loads((run / layout.METRICS).read_text())
    assert expected["num_images"] == 40
    where = f"test: {test}, 40 images"
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    for title in ("Metrics", "Confusion matrix", "Are the probabilities right? Reliability"):
        assert f"{title} (validation split)" in headings and f"{title} ({where})" in headings, headings
    assert any(h.startswith(f"Most confident errors ({where}: 3 of ") for h in headings), headings
    compared = {key: cells for key, *cells in re.findall(r'<tr id="compare-(\w+)"><th>[^<]*</th><td>([^<]*)</td><td>([^<]*)</td>', page)}
    for key in ("accuracy", "top_k_accuracy", "log_loss", "macro_f1", "ece"):
        assert compared[key][1] == f"{expected[key]:.4f}", (key, compared[key], expected[key])
    assert compared["num_images"] == [str(trained["num_val"]), "40"]
    assert compared["accuracy"][0] == f"{trained['val_accuracy']:.4f}"
    assert re.search(r'<span id="test-accuracy">([^<]*)</span>', page).group(1) == f"{expected['accuracy']:.1%}"
    assert f"Test {test}: accuracy {expected['accuracy']:.4f} on 40 images" in " ".join(result.output.split()), "said on the terminal too"
    assert f'alt="confusion matrix ({where})"' in page and f'alt="reliability diagram ({where})"' in page

    written = run / layout.EVALUATION
    assert json.loads((written / layout.METRICS).read_text())["accuracy"] == expected["accuracy"]
    assert pd.read_csv(written / layout.RELIABILITY_CSV)["count"].sum() == 40
    assert (written / layout.RELIABILITY_PNG).read_bytes()[:4] == b"\x89PNG"
    # The detector: its threshold, and the shares answered unknown that evaluate wrote (both distributions drawn).
    unknown, detector = pd.read_csv(written / layout.UNKNOWN_CSV), artifacts.Run.open(run).detector()
    shares = unknown.groupby("set")["novelty"].apply(lambda scores: np.mean(scores > detector.threshold))
    assert "Images outside the classes" in headings and f"Beyond a novelty score of {detector.threshold:.4g}" in page
    assert f"Test images answered unknown: {shares['in_class']:.1%}." in page
    assert f"Images outside the classes answered unknown: {shares['other']:.1%} of 3" in page
    assert 'alt="novelty scores"' in page


@pytest.mark.slow
@pytest.mark.browser

def test_report_renders_in_headless_chromium(digits_run, tmp_path):
    """The real browser: the page loads, every image decodes, and the accuracy figure is shown."""
    result = runner.invoke(app, ["report", str(digits_run), "--out", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page, "self-contained: nothing fetched"

    from selenium.webdriver.common.by import By

    with headless_chromium() as driver:
        driver.get((tmp_path / "report.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        broken = driver.execute_script(
            "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)"
        )
        shown = driver.find_element(By.ID, "accuracy").text
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        driver.save_screenshot(str(tmp_path / "report.png"))
    metrics = json.loads((digits_run / layout.METRICS).read_text())
    assert len(images) >= 5 and broken == []
    assert shown == f"{metrics['val_accuracy']:.1%}"
    assert headings[:3] == ["Data", "Training curves", "Metrics (validation split)"]
    assert "Where the model looked (Grad-CAM)" in headings and "Images outside the classes" in headings
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.browser
def test_the_report_of_a_logistic_head_shows_its_fit_not_epochs(tmp_path):
    """A logistic head alone trains no epoch: the page shows the C chosen, its folds and the held-out
    loss per C, no training curves, and puts epochs, lr and optimizer among the options not used."""
    from selenium.webdriver.common.by import By

    from tests.helpers import image_folder
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    data = image_folder(tmp_path / "data", per_class=10)
    run = train(data, tmp_path / "run", TrainOptions(backbone="resnet50", weights="none", image_size=32), verbose=0).run_dir
    config = json.loads((run / layout.CONFIG).read_text())
    assert config["head"] == "logistic" and config["logistic"]["folds"] == 5
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "report.html"), "--gradcam", "2"])
    assert result.exit_code == 0, result.output

    with headless_chromium() as driver:
        driver.get((tmp_path / "report.html").as_uri())
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        fit = driver.find_element(By.XPATH, "//section[h2[contains(., 'logistic regression')]]")
        images = [i.get_attribute("alt") for i in fit.find_elements(By.TAG_NAME, "img")]
        broken = driver.execute_script("return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        options = {row.find_element(By.TAG_NAME, "th").text: row.find_element(By.TAG_NAME, "td").text
                   for row in driver.find_elements(By.XPATH, "//section[h2='Configuration']//tr")}
        text = fit.text
    assert "Training curves" not in headings and headings[1] == "How the head was fitted (logistic regression)"
    assert f"C = {config['logistic']['C']:.3g}, chosen by 5-fold cross-validation" in text
    assert images == ["held-out log loss per C"] and broken == 0
    history = pd.read_csv(run / layout.HISTORY).iloc[0]
    assert f"{history['val_accuracy']:.3f}" in text and f"{history['val_loss']:.4f}" in text
    assert "epochs" not in options and "lr" not in options and "optimizer" not in options
    assert options["not used"].startswith(f"epochs {config['epochs']}, lr {config['lr']}, optimizer {config['optimizer']}")
