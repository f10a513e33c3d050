"""What a stage is compiled with."""

import json

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
    images: the exported SavedModel gives its predict_proba."""
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
    train, val = split[split["split"] == "train"], split[split["split"] == "val"]
    x = table.filter(like="f")
    regression = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=5000, random_state=42))
    regression.fit(x.loc[train["path"]].to_numpy(), (train["label"] == "7").astype(int))
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
