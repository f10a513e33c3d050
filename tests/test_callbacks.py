"""Early stopping and epoch backups that survive a restart."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer.training.callbacks import BACKUP, ResumableEarlyStopping, agree_on_backup, backup_epoch


def write_backup(stage_dir, epoch, previous=None):
    folder = stage_dir / BACKUP
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "training_metadata.json").write_text(json.dumps({"epoch": epoch}))
    if previous is not None:
        (folder / "training_metadata.json.bkp").write_text(json.dumps({"epoch": previous}))


def test_backup_epoch_reads_the_latest_and_the_previous_backup(tmp_path):
    assert backup_epoch(tmp_path / BACKUP) == 0
    write_backup(tmp_path, 5, previous=4)
    assert backup_epoch(tmp_path / BACKUP) == 5 and backup_epoch(tmp_path / BACKUP, previous=True) == 4


def early_stopping(stage_dir, model):
    callback = ResumableEarlyStopping(stage_dir, monitor="val_loss", patience=3, restore_best_weights=True)
    callback.set_model(model)
    return callback


@pytest.mark.parametrize("epochs_backed_up, best, wait, best_epoch", [(4, 0.4, 0, 3), (3, 0.5, 1, 1)])
def test_early_stopping_restarts_from_the_epoch_the_backup_holds(tmp_path, epochs_backed_up, best, wait, best_epoch):
    """Losses 1.0, 0.5, 0.7, 0.4. A backup of 4 epochs: best 0.4 (epoch 3). The backup is one epoch
    behind when the process died before writing it (its previous copy, 3 epochs): best 0.5 (epoch 1),
    one epoch without improvement."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    first = early_stopping(tmp_path, model)
    first.on_train_begin()
    weights_at = {}
    for epoch, loss in enumerate([1.0, 0.5, 0.7, 0.4]):
        model.set_weights([np.full_like(w, epoch + 1) for w in model.get_weights()])
        weights_at[epoch] = model.get_weights()
        first.on_epoch_end(epoch, {"val_loss": loss})

    write_backup(tmp_path, epochs_backed_up)
    again = early_stopping(tmp_path, model)
    again.on_train_begin()
    assert (again.best, again.wait, again.best_epoch) == (best, wait, best_epoch)
    assert again.saved_best() == best
    for restored, expected in zip(again.best_weights, weights_at[best_epoch]):
        np.testing.assert_array_equal(restored, expected)


def test_agreeing_on_a_backup_is_for_clusters_only(tmp_path):
    write_backup(tmp_path, 2, previous=1)
    agree_on_backup(tmp_path, tf.distribute.get_strategy())
    assert backup_epoch(tmp_path / BACKUP) == 2


def small_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(optimizer="sgd", loss="mse")
    return model



def assert_backup_holds(folder, weights) -> None:
    """The backup's latest weights file holds exactly `weights`."""
    restored = small_model()
    restored.load_weights(folder / "latest.weights.h5")
    for mine, theirs in zip(weights, restored.get_weights()):
        np.testing.assert_array_equal(mine, theirs)

def test_ctrl_c_during_a_backup_waits_for_the_whole_backup(tmp_path, monkeypatch):
    """A SIGINT arriving while the weights are written is raised once the backup is complete: the
    weights file loads whole and the epoch record names the epoch those weights belong to."""
    import os
    import signal

    from transfer.training.callbacks import backup

    model = small_model()
    callback = backup(tmp_path)
    callback.set_model(model)
    save_weights = model.save_weights

    def interrupted_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of writing
        save_weights(*args, **kwargs)

    monkeypatch.setattr(model, "save_weights", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        callback.on_epoch_end(3)
    assert backup_epoch(tmp_path / BACKUP) == 4
    assert_backup_holds(tmp_path / BACKUP, model.get_weights())


def test_a_backup_that_fails_midway_leaves_the_last_one_whole(tmp_path, monkeypatch):
    from transfer.training.callbacks import backup

    model = small_model()
    callback = backup(tmp_path)
    callback.set_model(model)
    callback.on_epoch_end(0)
    saved = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in saved])

    def dies_midway(filepath, **kwargs):
        with open(filepath, "wb") as file:
            file.write(b"\x89HDF half a file")
        raise OSError("killed")

    monkeypatch.setattr(model, "save_weights", dies_midway)
    with pytest.raises(OSError):
        callback.on_epoch_end(1)
    assert backup_epoch(tmp_path / BACKUP) == 1
    assert_backup_holds(tmp_path / BACKUP, saved)
    assert not [p.name for p in (tmp_path / BACKUP).iterdir() if p.name.startswith(".tmp-")]
