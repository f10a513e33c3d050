"""Keras callbacks and epoch backups that let a stage survive a restart, on one machine or several.

- `FullModelCheckpoint` saves the whole classifier while only its head is being fit (on cached
  features).
- `ResumableEarlyStopping` keeps its best value, patience count and best weights on disk, so a
  resumed stage stops where an uninterrupted one would have.
- `WholeBackupAndRestore` writes each epoch's backup so that a Ctrl-C or a kill never leaves half
  of it.
- `BatchProgress` shows the batches of a long epoch through the reporter.
- `StopOnCtrlC` stops a stage at a batch's end on Ctrl-C (`transfer.core.errors.stop_at_safe_points`).
- `agree_on_backup` brings the `keras.callbacks.BackupAndRestore` folders of all workers of a cluster
  to one epoch before a stage goes on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transfer.outputs import publishing
from transfer.training.distribute import is_multi_worker, min_across_workers
from transfer.core.errors import WorkerLostError, raise_if_stop_requested, sigint_deferred

#: The `BackupAndRestore` folder inside a stage's folder.
BACKUP = "backup"
#: What chooses the epoch a stage keeps, the stage a run keeps, and when a stage stops: lower is better.
SELECTION = "val_selection"


def selection_score(val_accuracy: float, val_loss: float) -> float:
    """`1 - val_accuracy`, with `val_loss / 1000` to break ties: the epoch kept is the one with the
    best validation accuracy and, among equal ones, the lowest validation loss.

    On a few dozen validation images the loss alone is a poor judge: it rises as soon as the model
    grows confident on the images it gets wrong, often while accuracy is still climbing, so keeping
    the lowest-loss epoch keeps an early, underfit model.
    """
    return (1.0 - float(val_accuracy)) + min(float(val_loss), 100.0) / 1000.0


class LearningRateLog(keras.callbacks.Callback):
    """Adds the learning rate of the epoch's last step to its logs (for `history.csv` and the curves)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            optimizer = self.model.optimizer
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class SelectionScore(keras.callbacks.Callback):
    """Adds `val_selection` (`selection_score`) to each epoch's logs, for the callbacks after it: of
    `val_map` in place of `val_accuracy` where the logs have it (multi-label runs, `MULTI_LABEL_SCORE`)."""

    def on_epoch_end(self, epoch, logs=None):
        score = None if logs is None else logs.get(MULTI_LABEL_SCORE, logs.get("val_accuracy"))
        if score is not None and "val_loss" in logs:
            logs[SELECTION] = selection_score(score, logs["val_loss"])


#: What a multi-label stage is judged by in place of `val_accuracy`: the validation mean average
#: precision over labels. The share of right yes/no decisions at 0.5 hardly moves on labels that
#: most images lack, and the epoch it kept was an early, underfit one (benchmarks.md, "Multi-label
#: from scratch").
MULTI_LABEL_SCORE = "val_map"


def mean_average_precision_metric() -> keras.metrics.Metric:
    """Keras' per-label area under the precision-recall curve, averaged over the labels (`map`, and
    `val_map` on the validation split): the mean average precision `transfer.metrics.multilabel` reports,
    interpolated over 200 thresholds."""
    return keras.metrics.AUC(curve="PR", multi_label=True, name="map")


def mean_average_precision(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """`mean_average_precision_metric` on arrays, so a stage fitted in closed form is judged alike."""
    metric = mean_average_precision_metric()
    metric.update_state(targets.astype("float32"), probabilities.astype("float32"))
    return float(keras.ops.convert_to_numpy(metric.result()))


class StopOnCtrlC(keras.callbacks.Callback):
    """The safe points of `transfer.core.errors.stop_at_safe_points`: after each training or validation
    batch, and after an epoch's records are written (it goes last). A Ctrl-C stops the stage there,
    in Python, before the next call into TensorFlow; an epoch cut short is neither logged nor backed up."""

    def on_train_batch_begin(self, batch, logs=None):  # before the first batch traces the step
        raise_if_stop_requested()

    def on_train_batch_end(self, batch, logs=None):
        raise_if_stop_requested()

    def on_test_batch_end(self, batch, logs=None):
        raise_if_stop_requested()

    def on_epoch_end(self, epoch, logs=None):
        raise_if_stop_requested()


class FullModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Saves the whole classifier, also while only its head is being fit on cached features."""

    def __init__(self, full_model: keras.Model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._full_model = full_model

    def set_model(self, model):
        super().set_model(self._full_model)

    def _save_model(self, epoch, batch, logs):
        with sigint_deferred():  # a Ctrl-C leaves the checkpoint whole, for `predict` and `--resume`
            super()._save_model(epoch, batch, logs)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose best value, patience count and best weights survive a restart.

    After each epoch its record for that epoch goes to `state_dir` (and the best weights whenever
    they improve). A new instance on the same folder starts from the record of the last epoch the
    stage's backup holds (`backup_epoch`), so the two always describe the same epoch.
    """

    def __init__(self, state_dir: Path, **kwargs):
        super().__init__(**kwargs)
        self._dir = Path(state_dir)
        self._records = self._dir / "early_stopping.json"

    def _restored(self) -> dict | None:
        last = backup_epoch(self._dir / BACKUP) - 1  # the last completed epoch, 0-based
        if last < 0 or not self._records.is_file():
            return None
        return publishing.read_json(self._records).get(str(last))

    def saved_best(self) -> float:
        record = self._restored()
        return record["best"] if record else float("inf")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        record = self._restored()
        if record:
            self.best, self.wait, self.best_epoch = record["best"], record["wait"], record["best_epoch"]
            self.best_weights = load_weights(self._weights(self.best_epoch))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.best is None:
            return
        if self.best_epoch == epoch:
            save_weights(self._weights(epoch), self.best_weights)
        records = publishing.read_json(self._records) if self._records.is_file() else {}
        records[str(epoch)] = {"best": float(self.best), "wait": self.wait, "best_epoch": self.best_epoch}
        publishing.write_json(self._records, records)
        keep = {self._weights(r["best_epoch"]).name for r in list(records.values())[-2:]}
        for old in self._dir.glob("early_stopping_best-*.npz"):
            if old.name not in keep:
                old.unlink()

    def _weights(self, epoch: int) -> Path:
        return self._dir / f"early_stopping_best-{epoch}.npz"


def backup(stage_dir: Path) -> keras.callbacks.BackupAndRestore:
    """Weights, optimizer and epoch after every epoch, the previous epoch's kept as well."""
    return WholeBackupAndRestore(Path(stage_dir) / BACKUP, double_checkpoint=True, delete_checkpoint=False)


class WholeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup files are never half written.

    Keras writes the weights in place, so a Ctrl-C or a kill during the write left a file that
    loads with layers missing, and `--resume` failed. Here each file is written under a temporary
    name and renamed (`transfer.outputs.publishing.atomic_path`), and Ctrl-C waits until the whole backup is
    written (`sigint_deferred`).
    """

    def _save_model(self):
        with sigint_deferred():
            os.makedirs(self.backup_dir, exist_ok=True)
            if self.double_checkpoint:
                for current, previous in (
                    (self._weights_path, self._prev_weights_path),
                    (self._training_metadata_path, self._prev_training_metadata_path),
                ):
                    if os.path.exists(current):
                        with publishing.atomic_path(Path(previous)) as temporary:
                            shutil.copyfile(current, temporary)
            with publishing.atomic_path(Path(self._weights_path)) as temporary:
                self.model.save_weights(filepath=str(temporary), overwrite=True)
            publishing.write_json(Path(self._training_metadata_path), {"epoch": self._current_epoch, "batch": self._last_batch_seen})


def backup_epoch(backup_dir: Path, previous: bool = False) -> int:
    """Epochs completed in a `BackupAndRestore` folder (its previous backup with `previous`)."""
    record = Path(backup_dir) / ("training_metadata.json.bkp" if previous else "training_metadata.json")
    return int(publishing.read_json(record)["epoch"]) if record.is_file() else 0


def agree_on_backup(stage_dir: Path, strategy: tf.distribute.Strategy) -> None:
    """Makes every worker of a cluster resume a stage from the same epoch.

    Workers run in lockstep, but one can be stopped after finishing an epoch and before saving its
    backup, so backups can be one epoch apart. All go on from the oldest; a worker one epoch ahead
    falls back to its previous backup (kept by `double_checkpoint`).

    Raises:
        WorkerLostError: the backups cannot be brought to one epoch.
    """
    if not is_multi_worker(strategy):
        return
    backup_dir = Path(stage_dir) / BACKUP
    mine = backup_epoch(backup_dir)
    agreed = min_across_workers(strategy, mine)
    if mine == agreed:
        return
    if agreed == 0:
        shutil.rmtree(backup_dir)
    elif backup_epoch(backup_dir, previous=True) == agreed:
        for name in ("latest.weights.h5", "training_metadata.json"):
            shutil.copy(backup_dir / f"{name}.bkp", backup_dir / name)
    else:
        raise WorkerLostError(
            f"This worker's backup in {backup_dir} is at epoch {mine} and another's at {agreed}; they "
            f"cannot be brought together. Start the run again on every worker with --force."
        )


def save_weights(path: Path, weights: list[np.ndarray]) -> None:
    with publishing.atomic_path(path) as temporary:
        np.savez(temporary, *weights)


def load_weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


#: From how many steps an epoch gets its own progress bar where Keras shows none (`verbose` 0 or 2).
LONG_EPOCH_STEPS = 50


class BatchProgress(keras.callbacks.Callback):
    """A progress bar through the reporter for each epoch, advanced at each batch's end: progress
    within a long epoch where Keras draws no bar of its own (`fit(verbose=2)` prints a line per
    epoch, at its end). `transfer.training.stages.fit_stage` adds it to epochs of `LONG_EPOCH_STEPS` steps or more."""

    def __init__(self, reporter, steps: int, description: str):
        super().__init__()
        self.reporter, self.steps, self.description = reporter, steps, description
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._close()
        self._bar = contextlib.ExitStack()
        self._advance = self._bar.enter_context(self.reporter.progress(f"{self.description}, epoch {epoch + 1}", self.steps))

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._advance.advance(1)

    def on_epoch_end(self, epoch, logs=None):
        self._close()

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.close()
