"""Temperature scaling and the expected calibration error, against computations of their own."""

import numpy as np
import pytest

from transfer.metrics.calibration import (
    calibrate, expected_calibration_error, fit_temperature, negative_log_likelihood, reliability, scale,
)
from transfer.models.saving import load_run_model


def overconfident(seed: int = 0, n: int = 2000, classes: int = 4, sharpen: float = 3.0):
    """Labels drawn from softmax(z), and probabilities softmax(sharpen * z): calibrated at T = sharpen."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in true])
    sharp = np.exp(sharpen * z) / np.exp(sharpen * z).sum(1, keepdims=True)
    return sharp, labels


def test_the_fitted_temperature_is_the_one_a_direct_search_of_the_log_likelihood_finds():
    probabilities, labels = overconfident()
    grid = np.linspace(0.2, 10, 9801)  # steps of 0.001
    logits = np.log(probabilities)

    def nll(t):  # written out again, not with the module's functions
        z = logits / t
        z = z - z.max(1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -log_softmax[np.arange(len(labels)), labels].mean()

    best = grid[np.argmin([nll(t) for t in grid])]
    fitted = fit_temperature(probabilities, labels)
    assert fitted == pytest.approx(best, abs=2e-3)
    assert fitted == pytest.approx(3.0, rel=0.1), "the data were made overconfident by 3"


def test_the_ece_against_a_hand_computation():
    # Top-1 confidences 0.95 (right), 0.95 (wrong), 0.55 (right), 0.34 (right), in 15 bins of 1/15:
    # (14/15, 1] holds both 0.95s, |0.5 - 0.95| x 2/4; (8/15, 9/15] the 0.55, |1 - 0.55| x 1/4;
    # (5/15, 6/15] the 0.34, |1 - 0.34| x 1/4.
    probabilities = np.array([[0.95, 0.05, 0.0], [0.95, 0.05, 0.0], [0.45, 0.55, 0.0], [0.34, 0.33, 0.33]])
    labels = np.array([0, 1, 1, 0])
    expected = 0.45 * 2 / 4 + 0.45 * 1 / 4 + 0.66 * 1 / 4
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected)
    rows = reliability(probabilities, labels)
    assert [(row["count"], row["accuracy"]) for row in rows if row["count"]] == [(1, 1.0), (1, 1.0), (2, 0.5)]
    assert len(rows) == 15 and sum(row["count"] for row in rows) == 4


def test_scaling_changes_no_prediction_and_calibrates():
    probabilities, labels = overconfident(seed=1)
    result = calibrate(probabilities, labels)
    calibrated = scale(probabilities, result.temperature)
    assert result.applied and result.temperature > 1
    assert (calibrated.argmax(1) == probabilities.argmax(1)).all()
    np.testing.assert_allclose(calibrated.sum(1), 1)
    assert result.ece_after < result.ece_before / 3 and result.log_loss_after < result.log_loss_before
    assert result.log_loss_after == pytest.approx(negative_log_likelihood(calibrated, labels))


def test_a_fit_that_would_make_the_ece_worse_is_not_applied():
    """Five images (found by a search): the likelihood's best temperature, 0.89, raises the ECE from
    0.152 to 0.236, so the run keeps T = 1 and says the fit was not applied."""
    probabilities = np.array([[0.13, 0.87], [0.25, 0.75], [0.66, 0.34], [0.22, 0.78], [0.76, 0.24]])
    labels = np.array([1, 1, 0, 1, 1])
    result = calibrate(probabilities, labels)
    assert result.fitted == pytest.approx(0.888, abs=0.01) and not result.applied and result.reason
    assert result.temperature == 1.0 and result.ece_after == result.ece_before == pytest.approx(0.152)
    assert result.log_loss_after == result.log_loss_before


def test_with_no_validation_error_no_temperature_is_fitted():
    """Every image right: the likelihood only grows as T falls, so a "fit" would make every answer certain."""
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert fit_temperature(probabilities, labels) < 0.06, "the check itself: the search runs to its smallest T"
    result = calibrate(probabilities, labels)
    assert not result.applied and result.temperature == 1.0 and result.fitted is None
    assert "classified right" in result.reason


def test_a_temperature_that_only_fits_its_own_images_is_not_applied():
    """49 images right at 0.9 and one wrong at 0.6: on all 50 the fit sharpens (T < 1) and lowers the
    validation ECE, but the fold holding the error is scored by a temperature fitted on images
    that are all right, which makes it certain of the wrong class."""
    probabilities = np.array([[0.9, 0.1]] * 49 + [[0.6, 0.4]])
    labels = np.array([0] * 49 + [1])
    fitted = fit_temperature(probabilities, labels)
    assert fitted < 1 and expected_calibration_error(scale(probabilities, fitted), labels) < expected_calibration_error(probabilities, labels)
    result = calibrate(probabilities, labels)
    assert not result.applied and result.temperature == 1.0
    assert result.held_out_log_loss > result.log_loss_before and "not fitted on" in result.reason


def test_the_held_out_check_agrees_with_the_fit_on_plenty_of_images():
    probabilities, labels = overconfident(seed=3)
    result = calibrate(probabilities, labels)
    assert result.applied
    assert result.held_out_log_loss == pytest.approx(result.log_loss_after, rel=0.01)
    assert result.held_out_log_loss < result.log_loss_before


def test_the_model_layer_computes_what_the_module_does():
    from transfer.models.heads import Temperature

    probabilities, _ = overconfident(seed=2, n=50)
    layer = Temperature(2.5)
    np.testing.assert_allclose(np.asarray(layer(probabilities.astype("float32"))), scale(probabilities, 2.5), rtol=1e-4, atol=1e-6)


def test_a_run_builds_its_temperature_in_and_says_so(digits_run, digits_dir, tmp_path):
    """The run's model ends in the fitted temperature: its probabilities are the scaled ones of the
    layers below it, no prediction changes, and metrics.json's ECE is what evaluate measures."""
    import json

    import keras
    from typer.testing import CliRunner

    from transfer.outputs.artifacts import Run
    from transfer.cli import app

    run = Run.open(digits_run)
    config, metrics = run.config(), json.loads((digits_run / "metrics.json").read_text())
    assert config["calibrate"] == "temperature" and metrics["calibration"]["temperature"] == config["temperature"]
    model = load_run_model(run)
    below = keras.Model(model.inputs[0], model.get_layer("temperature").input)
    assert model.get_layer("temperature").temperature == pytest.approx(config["temperature"])
    images = run.validation_images()
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(path).convert("RGB"), np.float32) for path in images["path"]])  # 32x32 already
    calibrated, raw = np.asarray(model(pixels)), np.asarray(below(pixels))
    np.testing.assert_allclose(calibrated, scale(raw, config["temperature"]), rtol=1e-4, atol=1e-6)
    assert (calibrated.argmax(1) == raw.argmax(1)).all()

    result = CliRunner().invoke(app, ["evaluate", str(digits_run), str(digits_dir), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    labels = [run.labels().index(label) for label in images["label"]]
    assert metrics["val_ece"] == pytest.approx(expected_calibration_error(calibrated, np.array(labels)), abs=1e-4)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    every = sorted(digits_dir.glob("*/*.png"))  # every digit, scored here by the model itself
    scores = np.asarray(model(np.stack([np.asarray(Image.open(path).convert("RGB"), np.float32) for path in every])))
    truth = np.array([run.labels().index(path.parent.name) for path in every])
    assert evaluated["ece"] == pytest.approx(expected_calibration_error(scores, truth), abs=1e-4)


def test_calibrate_none_leaves_the_model_as_trained(digits_dir, tmp_path):
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    result = train(digits_dir, tmp_path / "run", TrainOptions(backbone="lenet", epochs=1, augment=False, calibrate="none"), verbose=0)
    assert "temperature" not in [layer.name for layer in result.model.layers]
    assert result.metrics["calibration"] is None and result.metrics["val_ece"] is None


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [
    {"backbone": "lenet", "epochs": 2, "label_smoothing": 0.1},
    {"backbone": "lenet", "epochs": 2, "mixup": 0.2},
    {"backbone": "resnet50", "weights": "none", "image_size": 32, "head": "logistic"},
], ids=["label-smoothing", "mixup", "logistic-head"])
def test_every_recipe_is_calibrated_the_same_way(recipe, digits_dir, tmp_path):
    """Smoothed or mixed targets and the closed-form head: the run records its calibration, and the
    model ends in the temperature exactly when the fit was applied."""
    import json

    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    data = digits_dir
    if recipe.get("head") == "logistic":  # refit on every image after a nested cross-validation: 3 x 30 digits keep it quick
        import shutil

        for digit in ("3", "5", "8"):
            (tmp_path / "digits" / digit).mkdir(parents=True)
            for image in sorted((digits_dir / digit).glob("*.png"))[:30]:
                shutil.copy(image, tmp_path / "digits" / digit / image.name)
        data = tmp_path / "digits"
    result = train(data, tmp_path / "run", TrainOptions(augment=False, seed=1, **recipe), verbose=0)
    record = json.loads((result.run_dir / "metrics.json").read_text())["calibration"]
    layers = [layer.name for layer in result.model.layers]
    assert ("temperature" in layers) == record["applied"]
    assert record["applied"] or record["reason"]
    assert record["ece_after"] <= record["ece_before"]
