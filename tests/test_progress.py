"""Progress as the user sees it: a finished bar says how long it took; a long epoch shows its batches."""

import io

import numpy as np
from tests.helpers import RecordingReporter





def test_a_finished_bar_shows_the_time_it_took_not_zero_remaining(monkeypatch):
    from rich.console import Console

    import transfer.cli.printers as printers

    clock = [100.0]
    out = io.StringIO()
    monkeypatch.setattr(printers, "messages", Console(file=out, width=100, get_time=lambda: clock[0], force_terminal=False))
    with printers.RichReporter().progress("Backbone features, train", total=4) as progress:
        for _ in range(4):
            clock[0] += 20.0  # 80 s in all
            progress.advance(1)
    last = out.getvalue().strip().splitlines()[-1]
    assert "4/4" in last and "0:01:20" in last and "0:00:00" not in last, out.getvalue()


def test_a_long_epoch_shows_each_batch_through_the_reporter():
    import keras

    from transfer.training.callbacks import BatchProgress

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(12, 3)), np.arange(12) % 2
    reporter = RecordingReporter()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[BatchProgress(reporter, 3, "Stage frozen")])
    assert reporter.bars == [{"description": "Stage frozen, epoch 1", "total": 3, "done": 3},
                             {"description": "Stage frozen, epoch 2", "total": 3, "done": 3}]


def test_training_without_keras_bars_reports_batches_of_long_epochs(tmp_path, monkeypatch):
    """verbose=2 (a log, not a terminal): Keras prints a line per epoch, so the reporter shows the batches."""
    import transfer.training.stages
    from tests.helpers import image_folder
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    monkeypatch.setattr(transfer.training.stages, "LONG_EPOCH_STEPS", 2)  # 24 training images of 8 a batch: 3 steps
    data = image_folder(tmp_path / "data", per_class=16)
    options = TrainOptions(backbone="lenet", epochs=2, batch_size=8, image_size=32, augment=False, val_split=0.25)
    reporter = RecordingReporter()
    train(data, tmp_path / "run", options, reporter=reporter, verbose=2)
    epochs = [bar for bar in reporter.bars if ", epoch " in bar["description"]]
    assert [bar["description"] for bar in epochs] == ["Stage scratch, epoch 1", "Stage scratch, epoch 2"]
    assert all(bar["total"] == bar["done"] == 3 for bar in epochs)
    quiet = RecordingReporter()
    train(data, tmp_path / "run-tty", options, reporter=quiet, verbose=1)  # Keras draws its own bar
    assert not [bar for bar in quiet.bars if ", epoch " in bar["description"]]


def test_a_long_description_in_a_narrow_terminal_keeps_the_counts_and_the_time(monkeypatch):
    from rich.console import Console

    import transfer.cli.printers as printers

    out = io.StringIO()
    monkeypatch.setattr(printers, "messages", Console(file=out, width=80, get_time=lambda: 5.0, force_terminal=False))
    with printers.RichReporter().progress("Backbone features, train (1 view per image), 29 of 32 cached", total=32) as progress:
        progress.advance(32)
    last = out.getvalue().strip().splitlines()[-1]
    assert last.endswith("32/32     0:00:00") and "…" not in last, last
