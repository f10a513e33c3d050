"""What a stage is compiled with."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from transfer.core.choices import OPTIMIZERS
from transfer.training.stages import make_optimizer


def test_every_optimizer_the_options_offer_is_built():
    built = {name: make_optimizer(name, 0.05) for name in OPTIMIZERS}
    assert isinstance(built["adam"], keras.optimizers.Adam)
    assert isinstance(built["rmsprop"], keras.optimizers.RMSprop)
    sgd = built["sgd"]
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9 and sgd.nesterov
    for optimizer in built.values():
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.05)


@pytest.mark.parametrize("classes, scaled", [(2, False), (3, False), (2, True), (3, True)])
def test_a_logistic_regression_is_a_softmax_layer(classes, scaled):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from transfer.metrics.logistic import softmax_weights

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, -2, 0, 1], np.arange(60) % classes
    regression = make_pipeline(StandardScaler(), LogisticRegression(C=0.5)) if scaled else LogisticRegression(C=0.5)
    regression.fit(x + y[:, None], y)
    kernel, bias = softmax_weights(regression, classes)
    layer = keras.layers.Dense(classes, activation="softmax")
    layer.build((None, 5))
    layer.set_weights([kernel, bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), regression.predict_proba(x), atol=1e-5)


@pytest.mark.slow
def test_head_logistic_exports_scikit_learns_probabilities(digits_run, digits_dir, tmp_path):
    """Train --head logistic on a run's features; refit scikit-learn on `transfer features` of the same
    images (training and validation: `--refit`, the default): the exported SavedModel gives its predict_proba."""
    import shutil

    import pandas as pd
    import tensorflow as tf
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from typer.testing import CliRunner

    from transfer.cli import app

    runner = CliRunner()
    data = tmp_path / "digits"
    for digit in ("1", "7"):  # a small new task: ones and sevens
        (data / digit).mkdir(parents=True)
        for path in sorted((digits_dir / digit).iterdir())[:15]:
            shutil.copy(path, data / digit / path.name)
    run, export = tmp_path / "run", tmp_path / "export"
    result = runner.invoke(app, ["train", str(data), "--weights", str(digits_run), "--head", "logistic", "--out", str(run)])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["head"] == "logistic" and config["logistic"]["folds"] == 5 and config["logistic"]["C"] > 0
    assert runner.invoke(app, ["export", str(run), "--out", str(export)]).exit_code == 0
    features = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", str(run), str(data), "--out", str(features)])
    assert result.exit_code == 0 and "30 images x 120 features" in result.stdout, result.output

    table = pd.read_parquet(features).set_index("path")
    split = pd.read_csv(run / "split.csv", dtype=str)
    val = split[split["split"] == "val"]
    x = table.filter(like="f")
    regression = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=5000, random_state=42))
    assert config["refit"] is True, "the default: the head is fitted on the training and validation images"
    regression.fit(x.loc[split["path"]].to_numpy(), (split["label"] == "7").astype(int))
    expected = regression.predict_proba(x.loc[val["path"]].to_numpy())
    if config["temperature"] is not None:  # the run's calibration, built in after the head (transfer.metrics.calibration)
        from transfer.metrics.calibration import scale

        expected = scale(expected, config["temperature"])
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    scores = serve(images=tf.constant([open(p, "rb").read() for p in val["path"]]))["scores"].numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_the_logistic_fit_records_the_held_out_log_loss_of_each_c():
    """What the report draws: each C's mean held-out log loss, as scikit-learn's own cross-validation
    of that C on the same folds gives it, and the chosen C the lowest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.preprocessing import StandardScaler

    from transfer.metrics.logistic import cross_validated_losses, logistic_regression

    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    features = rng.normal(size=(90, 6)) + 0.8 * np.eye(6)[labels]
    regression, chosen, folds = logistic_regression(features, labels, 3, seed=0)
    recorded = cross_validated_losses(regression)
    assert folds == 5 and len(recorded["Cs"]) == len(recorded["cv_log_loss"]) == 10
    assert chosen == recorded["Cs"][int(np.argmin(recorded["cv_log_loss"]))]
    scaled = StandardScaler().fit_transform(features)  # as LogisticRegressionCV sees them, inside the pipeline
    for strength, loss in list(zip(recorded["Cs"], recorded["cv_log_loss"]))[::3]:
        scores = cross_val_score(LogisticRegression(C=strength, max_iter=5000), scaled, labels, cv=StratifiedKFold(5),
                                 scoring="neg_log_loss")
        assert -scores.mean() == pytest.approx(loss, rel=2e-3)
    one_image = logistic_regression(features[:4], np.array([0, 0, 1, 2]), 3, seed=0)[0]
    assert cross_validated_losses(one_image) == {}, "no cross-validation where a class has one image"


def _colour_folder(root, per_class=10, seed=0):
    """Two classes of solid 16 px squares whose red overlaps between them (no perfect split); returns
    each file's colour / 255, what a mean-pooling backbone computes of it."""
    from PIL import Image

    rng, colours = np.random.default_rng(seed), {}
    for label, low in (("ants", 0), ("bees", 90)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            colour = (int(rng.integers(low, low + 160)), int(rng.integers(0, 255)), int(rng.integers(0, 255)))
            Image.new("RGB", (16, 16), colour).save(root / label / f"{i}.png")
            colours[str((root / label / f"{i}.png").resolve())] = np.array(colour) / 255
    return colours


def _mean_colour_backbone(path):
    """A model file whose pooled features are each image's mean colour in [0, 1]."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x)).save(path)
    return path


def _sklearn_fit(x, y, seed):
    """The head's rule, written out: standardize, C among 10 by stratified folds of the log loss."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(5, np.bincount(y).min()))
    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=folds, scoring="neg_log_loss", max_iter=5000,
                                                                random_state=seed)).fit(x, y)


def test_refit_fits_the_head_on_every_image_and_reports_an_out_of_fold_estimate(tmp_path):
    """The default (--refit): the head is the fit on train + validation, and the metrics are the
    nested cross-validation scikit-learn gives on the same features; --no-refit is the old run."""
    import pandas as pd
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from typer.testing import CliRunner

    from transfer.cli import app
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    colours = _colour_folder(tmp_path / "data", per_class=3)
    backbone = _mean_colour_backbone(tmp_path / "means.keras")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "data"), "--backbone", str(backbone), "--seed", "3",
                                      "--calibrate", "none", "--out", str(tmp_path / "refit")])
    assert result.exit_code == 0, result.output
    assert "cross-validated accuracy" in result.output and "out of fold on 6 images" in result.output
    assert "a logistic fit" in result.output and "1 epoch" not in result.output, "a closed-form head has no epochs"
    run = tmp_path / "refit"
    config, metrics = (json.loads((run / name).read_text()) for name in ("config.json", "metrics.json"))
    assert config["refit"] is True and config["logistic"]["refit"] is True
    assert metrics["measured_on"] == "out_of_fold" and "cross-validation" in metrics["estimate"] and metrics["num_train"] == 6
    split = pd.read_csv(run / "split.csv", dtype=str)
    from transfer.evaluation.evaluate import _training_images

    assert (split["split"] == "val").sum() == 2 and _training_images(run, split) == 6, "every image trained the model"

    out_of_fold = pd.read_csv(run / "out_of_fold.csv")
    paths = [str(Path(p).resolve()) for p in out_of_fold["path"]]
    x, y = np.stack([colours[p] for p in paths]), (out_of_fold["label"] == "bees").to_numpy().astype(int)
    assert sorted(paths) == sorted(colours)
    expected = np.zeros((6, 2))  # nested: C chosen again inside each outer fold
    for fitted, held_out in StratifiedKFold(3, shuffle=True, random_state=3).split(x, y):
        expected[held_out] = _sklearn_fit(x[fitted], y[fitted], seed=3).predict_proba(x[held_out])
    np.testing.assert_allclose(out_of_fold[["p:ants", "p:bees"]].to_numpy(), expected, atol=1e-4)
    assert metrics["val_accuracy"] == pytest.approx(np.mean(expected.argmax(1) == y))
    assert metrics["val_loss"] == pytest.approx(log_loss(y, expected), rel=1e-4)

    from transfer.reports.report import report

    page = report(run, gradcam=0).read_text()  # the page shows the estimate, as such
    assert f'<span id="accuracy">{metrics["val_accuracy"]:.1%}</span> cross-validated accuracy' in page
    assert "Metrics (cross-validated, out of fold, before the refit on every image)" in page
    assert "Metrics (validation split)" not in page
    wrong = int(np.sum(expected.argmax(1) != y))
    assert f"Most confident errors (cross-validated, out of fold, before the refit on every image: {min(12, wrong)} of {wrong})" in page

    model = keras.models.load_model(run / "model.keras")
    head = model.get_layer("head").get_layer("predictions").get_weights()
    everything = _sklearn_fit(x, y, seed=3)  # the 20 images, train and validation together
    scaler, regression = everything[0], everything[-1]
    np.testing.assert_allclose(head[0][:, 1], regression.coef_[0] / scaler.scale_, rtol=1e-4, atol=1e-6)

    old = train(tmp_path / "data", tmp_path / "old", TrainOptions(backbone=str(backbone), seed=3, calibrate="none", refit=False))
    old_config = json.loads((old.run_dir / "config.json").read_text())
    assert old_config["refit"] is False and old.metrics["measured_on"] == "validation" and old.metrics["num_train"] == 4
    assert not (old.run_dir / "out_of_fold.csv").exists()
    old_split = pd.read_csv(old.run_dir / "split.csv", dtype=str)
    assert _training_images(old.run_dir, old_split) == 4, "the training split alone"
    train_rows = old_split[old_split["split"] == "train"]
    val_rows = old_split[old_split["split"] == "val"]
    features = lambda rows: np.stack([colours[str(Path(p).resolve())] for p in rows["path"]])  # noqa: E731
    labels = lambda rows: (rows["label"] == "bees").to_numpy().astype(int)  # noqa: E731
    fitted = _sklearn_fit(features(train_rows), labels(train_rows), seed=3)
    old_head = old.model.get_layer("head").get_layer("predictions").get_weights()
    np.testing.assert_allclose(old_head[0][:, 1], fitted[-1].coef_[0] / fitted[0].scale_, rtol=1e-4, atol=1e-6)
    assert old.metrics["val_accuracy"] == pytest.approx(np.mean(fitted.predict(features(val_rows)) == labels(val_rows)))
