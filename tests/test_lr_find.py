"""`transfer lr-find`: the valley rule, a toy problem whose good rates are found by training at
each, and the command on real folders (the suggestion inside the sweep, nothing but two files)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from transfer.cli import app
from transfer.training.lr_find import suggest, sweep


def curve(losses) -> pd.DataFrame:
    rates = np.logspace(-7, 1, len(losses))
    return pd.DataFrame({"step": range(len(losses)), "learning_rate": rates, "loss": losses, "smoothed_loss": losses})


def test_the_valley_rule_picks_a_rate_inside_the_stretch_where_the_loss_falls():
    rng = np.random.default_rng(0)
    flat = 2.0 + 0.01 * rng.standard_normal(40)  # steps 0-39: nothing happens yet
    falling = np.linspace(2.0, 0.5, 40)  # steps 40-79: the loss falls
    rising = np.linspace(0.6, 9.0, 20)  # steps 80-99: it blows up
    table = curve(np.concatenate([flat, falling, rising]))
    suggested = suggest(table)
    step = int(np.argmin(np.abs(table["learning_rate"] - suggested)))
    assert 45 <= step <= 75, step
    assert table["learning_rate"].min() <= suggested <= table["learning_rate"].max()


def test_a_sweep_that_diverges_at_once_asks_for_a_lower_start():
    from transfer.core.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="too early to suggest a learning rate. Lower --start-lr"):
        suggest(curve([1.0, 1.0, 5.0, 50.0]))


def toy_problem(seed: int = 0):
    """Linear regression in 20 dimensions (mean squared error, standard normal features, so its
    curvature is known: about 2), in batches of 16; `seed` draws the samples of the same problem."""
    import tensorflow as tf

    weights = np.random.default_rng(0).normal(0, 1, (20, 1)).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    features = rng.normal(0, 1, (960, 20)).astype(np.float32)
    targets = features @ weights + rng.normal(0, 0.1, (960, 1)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((features, targets)).shuffle(960, seed=seed).batch(16).repeat()


def toy_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(1)])


def final_loss(rate: float, steps: int = 60) -> float:
    """The loss on fresh samples after `steps` steps at a constant `rate` (SGD, Nesterov momentum 0.9, as swept)."""
    import keras

    model = toy_model()
    model.compile(optimizer=keras.optimizers.SGD(rate, momentum=0.9, nesterov=True), loss="mse")
    for features, targets in toy_problem().take(steps):
        model.train_on_batch(features, targets)
    losses = [float(model.test_on_batch(features, targets)) for features, targets in toy_problem(seed=1).take(10)]
    return float(np.mean(losses)) if np.isfinite(losses).all() else np.inf


@pytest.mark.slow
def test_on_a_toy_problem_the_suggestion_is_a_rate_that_trains_well():
    """The good rates are found independently, by training a fresh model at each rate of a grid;
    the suggestion must be among those whose final loss is within 10 times the best's (the loss
    falls by orders of magnitude across the grid) and far from the rates that diverge."""
    import keras

    table = sweep(toy_model(), toy_problem(), loss=keras.losses.MeanSquaredError(), optimizer="sgd", start_lr=1e-5,
                  end_lr=100.0, steps=100)
    suggested = suggest(table)
    assert math.isfinite(suggested) and 1e-5 <= suggested <= 100
    final = {rate: final_loss(rate) for rate in np.logspace(-4, 1, 11)}
    best = min(final.values())
    good = [rate for rate, loss in final.items() if loss <= 10 * best]
    assert max(final.values()) > 1000 * best  # the grid reaches rates that do not train
    assert min(good) <= suggested <= max(good), (suggested, final)


@pytest.mark.slow
def test_lr_find_on_a_folder_writes_only_its_plot_and_csv(tmp_path):
    from tests.helpers import image_folder

    data = image_folder(tmp_path / "data", classes=("ants", "bees", "wasps"), per_class=8)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(app, [
        "lr-find", str(data), "--backbone", "lenet", "--steps", "30", "--label-smoothing", "0.1", "--out", str(tmp_path / "lr"),
    ])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("Suggested --lr"))
    suggested = float(line.split()[2])
    table = pd.read_csv(tmp_path / "lr" / "lr_find.csv")
    assert table["learning_rate"].min() <= suggested <= table["learning_rate"].max()
    assert math.isfinite(suggested) and 1 <= len(table) <= 30
    np.testing.assert_allclose(table["learning_rate"], 1e-7 * (10 / 1e-7) ** (table["step"] / 29), rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == [".transfer.json", "lr_find.csv", "lr_find.png"]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "lr"))
    assert after == before  # nothing written anywhere else, no run, no staging folder left
    assert json.loads((tmp_path / "lr" / ".transfer.json").read_text())["kind"] == "lr-find"


def test_lr_find_checks_its_options_before_reading_images(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["lr-find", str(tmp_path / "missing"), "--steps", "5", "--out", str(tmp_path / "lr")])
    assert result.exit_code == 2 and "--steps must be an integer >= 20" in result.output
    result = runner.invoke(app, ["lr-find", str(tmp_path), "--backbone", "resnet50", "--head", "logistic", "--out", str(tmp_path / "lr")])
    assert result.exit_code == 2 and "has no learning rate to find" in result.output
    result = runner.invoke(app, ["lr-find", str(tmp_path), "--start-lr", "1", "--end-lr", "0.1", "--out", str(tmp_path / "lr")])
    assert result.exit_code == 2 and "--end-lr must be a finite number above --start-lr" in result.output
