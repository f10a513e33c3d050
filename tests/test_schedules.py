"""Learning-rate schedules: the rate at chosen steps, against the formulas written out here; and in
a real two-stage run, the rate each epoch ended at, with TensorBoard logs of both stages."""

import math

import numpy as np
import pandas as pd
import pytest

from transfer.training.options import TrainOptions
from transfer.training.schedules import OneCycle, make_schedule


def rate_at(schedule, step: int) -> float:
    return float(schedule) if isinstance(schedule, float) else float(np.asarray(schedule(step)))


def test_constant_is_the_rate_at_every_step():
    schedule = make_schedule("constant", 0.02, 100)
    assert [rate_at(schedule, step) for step in (0, 50, 100)] == [0.02, 0.02, 0.02]


def test_cosine_falls_from_the_rate_to_one_percent_of_it():
    schedule = make_schedule("cosine", 0.1, 200)
    assert rate_at(schedule, 0) == pytest.approx(0.1)
    assert rate_at(schedule, 100) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5), rel=1e-5)  # half way down the cosine
    assert rate_at(schedule, 50) == pytest.approx(0.1 * (0.01 + 0.99 * (1 + math.cos(math.pi / 4)) / 2), rel=1e-5)
    assert rate_at(schedule, 200) == pytest.approx(0.001, rel=1e-5)


def test_onecycle_warms_up_for_a_quarter_then_anneals_to_the_rate_over_100000():
    rate, steps = 0.01, 400  # warm-up: steps 0..100
    schedule = make_schedule("onecycle", rate, steps)
    assert rate_at(schedule, 0) == pytest.approx(rate / 25, rel=1e-5)
    assert rate_at(schedule, 50) == pytest.approx((rate / 25 + rate) / 2, rel=1e-5)  # half way up the cosine
    assert rate_at(schedule, 100) == pytest.approx(rate, rel=1e-5)
    assert rate_at(schedule, 250) == pytest.approx((rate + rate / 1e5) / 2, rel=1e-5)  # half way down
    assert rate_at(schedule, 400) == pytest.approx(rate / 1e5, rel=1e-3)
    rates = [rate_at(schedule, step) for step in range(0, 401, 10)]
    peak = int(np.argmax(rates))
    assert peak == 10 and all(np.diff(rates[: peak + 1]) > 0) and all(np.diff(rates[peak:]) < 0)


@pytest.mark.filterwarnings("ignore:Skipping variable loading")
def test_onecycle_survives_saving_with_the_optimizer(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(make_schedule("onecycle", 0.01, 40)), loss="mse")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    schedule = keras.optimizers.schedules.deserialize(loaded.optimizer.get_config()["learning_rate"])
    assert isinstance(schedule, OneCycle) and rate_at(schedule, 10) == pytest.approx(0.01, rel=1e-5)


def test_an_unknown_schedule_is_refused_before_any_work():
    from transfer.core.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="--schedule must be constant | cosine | onecycle; received 'linear'"):
        TrainOptions(backbone="lenet", schedule="linear").resolved()


def test_defaults_come_from_the_table_of_defaults():
    from transfer.core.choices import DEFAULT_SCHEDULES

    options = TrainOptions(backbone="resnet50").resolved()
    assert (options.schedule, options.finetune_schedule) == (DEFAULT_SCHEDULES["frozen"], DEFAULT_SCHEDULES["finetune"])
    assert TrainOptions(backbone="lenet").resolved().schedule == DEFAULT_SCHEDULES["scratch"]


def event_scalars(folder) -> dict[str, list[int]]:
    """`{tag: [steps]}` of every scalar summary in the TensorBoard event files under `folder`."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    steps: dict[str, list[int]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


@pytest.mark.slow
def test_a_two_stage_run_follows_each_stages_schedule_and_logs_both_stages_to_tensorboard(digits_dir, digits_run, tmp_path):
    from transfer.training.train import train

    options = TrainOptions(
        weights=str(digits_run), epochs=3, finetune_epochs=2, lr=0.01, finetune_lr=0.002, schedule="onecycle",
        finetune_schedule="constant", augment=False, patience=10, batch_size=50, tensorboard=True, seed=1,
    )
    result = train(digits_dir, tmp_path / "run", options, verbose=0)
    history = pd.read_csv(result.run_dir / "history.csv")
    assert list(history["stage"]) == ["frozen"] * 3 + ["finetune"] * 2
    steps = math.ceil(result.metrics["num_train"] / 50)
    onecycle = make_schedule("onecycle", 0.01, steps * 3)
    expected = [rate_at(onecycle, steps * epoch) for epoch in (1, 2, 3)] + [0.002, 0.002]
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-4)

    logs = result.run_dir / "logs"
    train_steps, validation_steps = event_scalars(logs / "train"), event_scalars(logs / "validation")
    assert sorted(set(train_steps["epoch_loss"])) == [0, 1, 2, 3, 4]  # both stages, on one axis of epochs
    assert sorted(set(validation_steps["epoch_loss"])) == [0, 1, 2, 3, 4]
