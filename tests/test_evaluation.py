"""evaluate, report, visualize, compare: metrics checked against scikit-learn, the report in a browser."""

import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn import metrics as skm
from typer.testing import CliRunner

from cli import app
from transfer import rundir
from transfer.backbones import get_backbone
from transfer.classifier import build_classifier
from transfer.evaluation import evaluate, tta_views
from transfer.training import TrainOptions, train
from transfer.visualize import grad_cam

runner = CliRunner()


@pytest.fixture(scope="module")
def run(digits_dir, tmp_path_factory):
    """LeNet-5 after 3 epochs on the generated digits: good, but with errors to show."""
    out = tmp_path_factory.mktemp("evaluation") / "lenet"
    return train(digits_dir, out, TrainOptions(backbone="lenet", epochs=3, augment=False, seed=3), verbose=0).run_dir


def test_evaluate_writes_metrics_that_match_scikit_learn(run, digits_dir, tmp_path):
    result = runner.invoke(app, ["evaluate", str(run), str(digits_dir), "--out", str(tmp_path / "eval")])
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


def test_evaluation_against_scikit_learn_directly(run, digits_dir):
    data = pd.DataFrame({"path": [str(p) for p in sorted(digits_dir.rglob("*.png"))]})
    data["label"] = [p.rsplit("/", 2)[-2] for p in data["path"]]
    evaluation = evaluate(run, data)
    truth = data.set_index("path").loc[evaluation.examples["path"], "label"].astype(int).to_numpy()
    assert evaluation.summary["log_loss"] == pytest.approx(skm.log_loss(truth, evaluation.scores, labels=range(10)))
    assert evaluation.summary["top_k_accuracy"] == pytest.approx(skm.top_k_accuracy_score(truth, evaluation.scores, k=3, labels=range(10)))
    f1 = skm.f1_score(truth, evaluation.scores.argmax(1), average=None, labels=range(10))
    np.testing.assert_allclose(evaluation.per_class["f1"].iloc[:10], f1)


def test_savedmodel_evaluates_like_the_run(run, digits_dir, tmp_path):
    export = tmp_path / "export"
    assert runner.invoke(app, ["export", str(run), "--out", str(export)]).exit_code == 0
    data = pd.DataFrame({"path": [str(p) for p in sorted((digits_dir / "4").iterdir())], "label": "4"})
    from_run, from_export = evaluate(run, data), evaluate(export, data)
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


def test_evaluate_refuses_classes_the_model_does_not_know(run, tmp_path):
    from .cli_cases import image_folder

    data = image_folder(tmp_path / "other", classes=("0", "cat"), per_class=2)
    result = runner.invoke(app, ["evaluate", str(run), str(data), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "classes the model was not trained on: cat" in result.output


@pytest.mark.parametrize("backbone", ["resnet50", "lenet"])
def test_grad_cam_gives_unit_heatmaps_at_input_size(backbone):
    spec = get_backbone(backbone)
    size = 96 if spec.pretrained else 32  # ResNet50's maps are 3x3 at 96 (1x1 at 32)
    keras.utils.set_random_seed(0)
    model = build_classifier(spec, num_classes=3, image_size=size, weights=None)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    heatmaps = grad_cam(model, spec.name, spec.pretrained, pixels, [0, 2])
    assert heatmaps.shape == (2, size, size)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1 + 1e-6 and heatmaps.max() > 0


def test_visualize_writes_filters_and_feature_maps(run, tmp_path):
    result = runner.invoke(app, ["visualize", str(run), "--layers", "c1,c3", "--out", str(tmp_path / "vis")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["feature_maps_c1.png", "feature_maps_c3.png", "filters.png"]
    bad = runner.invoke(app, ["visualize", str(run), "--layers", "conv9", "--out", str(tmp_path / "vis2")])
    assert bad.exit_code == 2 and "conv9 not in lenet" in bad.output


def test_report_renders_in_headless_chromium(run, tmp_path):
    """The real browser: the page loads, every image decodes, and the accuracy figure is shown."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "needs Debian's chromium and chromium-driver (`make test` installs them)"
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page, "self-contained: nothing fetched"

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get((tmp_path / "report.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        broken = driver.execute_script(
            "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)"
        )
        shown = driver.find_element(By.ID, "accuracy").text
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert len(images) >= 5 and broken == []
    assert shown == f"{metrics['val_accuracy']:.1%}"
    assert headings[:3] == ["Data", "Training curves", "Metrics on the validation split"]
    assert "Where the model looked (Grad-CAM)" in headings
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_compare_trains_each_on_one_split_and_reports_failures(tmp_path, hymenoptera, monkeypatch):
    from keras.src.utils import file_utils

    from .conftest import few_photos

    def offline(fname, origin, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: [Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "get_file", offline)
    data = few_photos(hymenoptera / "train", tmp_path / "data", per_class=6)
    out = tmp_path / "compare"
    result = runner.invoke(app, [
        "compare", str(data), "--backbones", "lenet,resnet50,vgg16", "--epochs", "1", "--image-size", "32",
        "--val-split", "0.5", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    rows = board.set_index("backbone")
    assert list(board["backbone"])[-1] == "vgg16" and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in rows.loc["vgg16", "error"]
    # resnet50 has no --weights none here: it fails the same way, and lenet still ran.
    assert rows.loc["lenet", "error"] == "" and 0 <= float(rows.loc["lenet", "val_accuracy"]) <= 1
    assert rows.loc["lenet", "mode"] == "scratch" and rows.loc["resnet50", "mode"] == "frozen"
    assert int(rows.loc["lenet", "parameters"]) == int(rows.loc["lenet", "trainable_parameters"]) > 0
    assert (out / "leaderboard.png").stat().st_size > 5000
    split = pd.read_csv(out / "runs" / "lenet" / "split.csv")
    assert split.equals(pd.read_csv(out / "split.csv"))


def test_first_layer_filters_of_bgr_backbones_are_shown_in_rgb_order():
    from transfer.visualize import first_layer_filters

    layer = keras.layers.Conv2D(1, 2)
    layer.build((None, 4, 4, 3))
    kernel = np.zeros((2, 2, 3, 1), np.float32)
    kernel[:, :, 0, 0] = 1.0  # the first input channel of a caffe-mode backbone is blue
    layer.kernel.assign(kernel)
    (image,), _ = first_layer_filters(layer, bgr=True)
    assert image[..., 2].min() == 1 and image[..., :2].max() == 0
    (image,), _ = first_layer_filters(layer, bgr=False)
    assert image[..., 0].min() == 1
