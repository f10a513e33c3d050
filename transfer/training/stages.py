"""Training stages: what a run carries from one to the next, and fitting one of them.

A stage is a name, a number of epochs and a learning rate (`Stage`). `fit_stage` compiles the model
(or only its head, on cached backbone features) with the stage's learning-rate schedule and the run's
loss (`transfer.training.mixing`), fits it with early stopping on the validation score, the best checkpoint, a CSV history and per-epoch backups
(`transfer.training.callbacks`), and keeps its weights only if they beat the best validation loss so far.
Everything a run carries between stages travels in one `RunState` (`transfer.training.state`); after
each stage its record is written to the run's `resume.json`, so a finished stage is never run again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from transfer.outputs import layout, publishing
from transfer.data.augmentation import AUGMENTATION
from transfer.training.callbacks import (
    BACKUP,
    LONG_EPOCH_STEPS,
    MULTI_LABEL_SCORE,
    SELECTION,
    BatchProgress,
    FullModelCheckpoint,
    ResumableEarlyStopping,
    LearningRateLog,
    SelectionScore,
    StopOnCtrlC,
    selection_score,
    agree_on_backup,
    backup,
    backup_epoch,
    mean_average_precision,
    mean_average_precision_metric,
)
from transfer.training.features import extract_features, extractor_and_cache, features_dataset
from transfer.metrics.logistic import (cross_validated_losses, linear_weights, logistic_out_of_fold, logistic_regression,
                                       softmax_weights, stratified_folds)
from transfer.training.mixing import make_loss, mixed_batches, one_hot_targets, uses_probability_targets
from transfer.training.schedules import make_schedule
from transfer.training.state import RunState


@dataclass(frozen=True)
class Stage:
    """`frozen` (head on a frozen backbone), `finetune` (top layers unfrozen) or `scratch`; its
    learning rate follows `schedule` (`transfer.training.schedules`)."""

    name: str
    epochs: int
    learning_rate: float
    schedule: str = "constant"


def fit_stage(run: RunState, stage: Stage, *, cached_features: bool = False) -> None:
    """Fits `stage` on `run`, going on from its last backup; a finished stage is skipped.

    Args:
        cached_features: fit only the head, on backbone features computed once per image
            (`transfer.training.features`); the backbone must be frozen.
    """
    if stage.name in run.stages_done:
        return
    started = time.perf_counter()
    options = run.options
    stage_dir = run.files.stage_dir(stage.name)
    stage_dir.mkdir(parents=True, exist_ok=True)
    agree_on_backup(stage_dir, run.strategy)
    model, train_data, val_data = run.model, run.data.train_data, run.data.val_data
    if cached_features:
        model = run.model.get_layer("head")
        train_data, val_data = _cached_feature_datasets(run)
    if uses_probability_targets(options):
        classes = len(run.folder.class_names)
        if not options.multi_label:  # multi-label targets are 0/1 vectors already
            train_data, val_data = one_hot_targets(train_data, classes), one_hot_targets(val_data, classes)
        if options.mixing:  # never on cached features: `TrainOptions.frozen_features` is in_loop with mixing
            train_data = mixed_batches(train_data, options, seed=options.seed + run.epoch)
    run.reporter.message(
        f"Stage {stage.name}: up to {stage.epochs} epoch{'s' if stage.epochs != 1 else ''} at learning rate "
        f"{stage.learning_rate:g} ({stage.schedule} schedule); the epoch kept has the lowest val_selection "
        + ("(1 - val_map + val_loss / 1000; val_map: the mean average precision over labels)." if options.multi_label
           else "(1 - val_accuracy + val_loss / 1000).")
    )
    steps = math.ceil(len(run.data.train_paths) / run.data.global_batch) * stage.epochs
    with run.strategy.scope():
        model.compile(
            optimizer=make_optimizer(options.optimizer, make_schedule(stage.schedule, stage.learning_rate, steps)),
            loss=make_loss(options),
            # multi-label: the share of right yes/no decisions at 0.5 (over labels and images), and the mAP that judges the epoch
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), mean_average_precision_metric()] if options.multi_label else ["accuracy"],
        )
    patience = options.stage_patience(stage.epochs)
    early_stopping = ResumableEarlyStopping(
        stage_dir, monitor=SELECTION, mode="min", patience=patience, restore_best_weights=True
    )
    best_so_far = min(run.best_loss, early_stopping.saved_best())
    callbacks = [
        SelectionScore(),  # first: the callbacks after it read it from the logs
        early_stopping,
        LearningRateLog(),
        FullModelCheckpoint(
            run.model, run.files.path / layout.CHECKPOINT, monitor=SELECTION, mode="min", save_best_only=True,
            initial_value_threshold=None if best_so_far == float("inf") else best_so_far,
        ),
        keras.callbacks.CSVLogger(stage_dir / layout.HISTORY, append=True),
        backup(stage_dir),  # last, so that a backup marks an epoch whose other records are written
    ]
    if options.tensorboard:  # epochs are counted across stages, so the stages share one time axis
        callbacks.insert(-1, keras.callbacks.TensorBoard(run.files.path / layout.TENSORBOARD_LOGS, write_graph=False))
    callbacks.append(StopOnCtrlC())  # after the backup: an epoch it stops after is recorded whole
    if backup_epoch(stage_dir / BACKUP):
        run.reporter.message(f"Stage {stage.name}: restoring the weights and optimizer of the last completed epoch.")
    if run.verbose not in (1, "auto") and steps // stage.epochs >= LONG_EPOCH_STEPS:  # Keras shows no bar within an epoch
        callbacks.insert(0, BatchProgress(run.reporter, steps // stage.epochs, f"Stage {stage.name}"))
    model.fit(
        train_data, validation_data=val_data, epochs=run.epoch + stage.epochs, initial_epoch=run.epoch,
        callbacks=callbacks, verbose=run.verbose, shuffle=False,  # the datasets shuffle themselves
        class_weight=run.data.class_weight,
    )
    stage_loss = float("inf") if early_stopping.best is None else float(early_stopping.best)
    run.end_stage(stage.name, stage_loss, time.perf_counter() - started)


def fit_logistic(run: RunState) -> None:
    """The frozen stage in closed form: scikit-learn's multinomial logistic regression on the pooled
    (unaugmented) features, standardized, its inverse regularization C chosen by stratified
    cross-validation (log loss), becomes the head's softmax layer, the standardization folded into
    its weights. With `--refit` (the default; `TrainOptions.refits`) it is fitted on the training and
    validation images together, after an estimate of that fit from out-of-fold predictions over the
    same images (`_fit_refit`); else on the training split alone. A finished stage is skipped.

    Standardizing makes C weigh every feature alike and the solver converge: on ResNet50 features
    of 244 photos (random weights) the cross-validation took 17 s raw and 3 s standardized."""
    stage = Stage("logistic", 1, 0.0)
    if stage.name in run.stages_done:
        return
    started = time.perf_counter()
    if run.options.augment:
        run.reporter.message("--head logistic: the regression is fitted on unaugmented features.")
    train_x, val_x = _frozen_features(run)
    fit = {}
    if run.options.multi_label:
        row, strength, folds = _fit_one_vs_rest(run, train_x, val_x)
    else:
        row, regression, fit = _fit_softmax(run, train_x, val_x)
        strength, folds = fit.pop("C"), fit.pop("folds")
        fit.update(cross_validated_losses(regression))
    stage_dir = run.files.stage_dir(stage.name)
    stage_dir.mkdir(parents=True, exist_ok=True)
    publishing.write_table(stage_dir / layout.HISTORY, pd.DataFrame([row]))
    run.model.save(run.files.path / layout.CHECKPOINT)
    run.record["logistic"] = {"C": strength, "folds": folds, **fit}
    run.end_stage(stage.name, selection_score(row.get(MULTI_LABEL_SCORE, row["val_accuracy"]), row["val_loss"]), time.perf_counter() - started)


def _fit_softmax(run: RunState, train_x: np.ndarray, val_x: np.ndarray) -> tuple[dict, object, dict]:
    """Single-label data: the regression set as the head's softmax layer; its history row (with
    `--refit`, `val_` is the out-of-fold estimate), the regression, and how it was fitted."""
    from sklearn.metrics import log_loss

    classes = np.arange(len(run.folder.class_names))
    balanced, seed = run.options.class_weight == "auto", run.options.seed
    x, y = np.concatenate([train_x, val_x]), np.concatenate([run.data.train_labels, run.data.val_labels])
    outer = stratified_folds(y, len(classes), seed=seed) if run.options.refits else None
    if run.options.refits and outer is None:
        run.reporter.message("No refit: a class has a single image, too few for a cross-validated estimate; the head "
                             "is fitted on the training split and measured on the validation split.")
    if outer is None:
        x, y, estimate, held_labels = train_x, run.data.train_labels, None, run.data.val_labels
    else:
        with run.reporter.progress(f"Cross-validated estimate, {int(outer.max())} logistic fits", total=int(outer.max())) as progress:
            estimate = logistic_out_of_fold(x, y, outer, len(classes), seed=seed, balanced=balanced, after_each=progress.advance)
        held_labels = y
        write_out_of_fold(run, outer, estimate)
    regression, strength, folds = logistic_regression(x, y, len(classes), seed=seed, balanced=balanced)
    run.model.get_layer("head").get_layer("predictions").set_weights(softmax_weights(regression, len(classes)))
    fitted_p = regression.predict_proba(x)
    held_p = regression.predict_proba(val_x) if estimate is None else estimate
    row = {
        "epoch": 0, "accuracy": float(np.mean(fitted_p.argmax(1) == y)), "loss": float(log_loss(y, fitted_p, labels=classes)),
        "val_accuracy": float(np.mean(held_p.argmax(1) == held_labels)),
        "val_loss": float(log_loss(held_labels, held_p, labels=classes)), "learning_rate": float("nan"),
    }
    how = f"{folds}-fold cross-validation" if folds >= 2 else "no cross-validation possible"
    if estimate is None:
        run.reporter.message(f"Stage logistic: C = {strength:g} ({how}).")
        return row, regression, {"C": strength, "folds": folds, "refit": False}
    outer_folds = int(outer.max())
    run.reporter.message(
        f"Stage logistic: cross-validated estimate ({outer_folds} folds, C chosen within each) on all {len(y)} images: "
        f"accuracy {row['val_accuracy']:.4f}, log loss {row['val_loss']:.4f}; then refit on all of them: C = {strength:g} ({how}).")
    return row, regression, {"C": strength, "folds": folds, "refit": True, "estimate_folds": outer_folds, "images": len(y)}


def write_out_of_fold(run: RunState, folds: np.ndarray, probabilities: np.ndarray) -> None:
    """`out_of_fold.csv` in the run: each training and validation image's path, label, split, fold and
    out-of-fold probabilities (`p:NAME`), what the run's metrics and the report are measured on."""
    names = run.folder.class_names
    labels = np.concatenate([run.data.train_labels, run.data.val_labels])
    table = pd.DataFrame({
        "path": [*run.data.train_paths, *run.data.val_paths], "label": [names[i] for i in labels],
        "split": ["train"] * len(run.data.train_paths) + ["val"] * len(run.data.val_paths), "fold": folds,
    })
    scores = pd.DataFrame(probabilities, columns=[f"p:{name}" for name in names])
    publishing.write_table(run.files.path / layout.OUT_OF_FOLD_CSV, pd.concat([table, scores], axis=1))


def _fit_one_vs_rest(run: RunState, train_x: np.ndarray, val_x: np.ndarray) -> tuple[dict, list, list]:
    """Multi-label data: one logistic regression per label (`logistic_regression` on that label's
    yes/no), each the weights of its sigmoid; a label on every training image or on none gets a
    constant output. Returns the history row, and each label's C and folds."""
    from transfer.metrics.multilabel import binary_log_loss

    kernel = np.zeros((train_x.shape[1], run.data.train_labels.shape[1]), np.float32)
    bias = np.zeros(run.data.train_labels.shape[1], np.float32)
    strengths, folds = [], []
    for label in range(run.data.train_labels.shape[1]):
        truth = run.data.train_labels[:, label].astype(int)
        if truth.min() == truth.max():  # nothing to separate: the training share, as a constant
            share = np.clip(truth.mean(), 1e-3, 1 - 1e-3)
            bias[label] = np.log(share / (1 - share))
            strengths.append(None), folds.append(0)
            continue
        regression, strength, fold = logistic_regression(train_x, truth, 2, seed=run.options.seed)
        coef, intercept = linear_weights(regression)
        kernel[:, label], bias[label] = coef[0], intercept[0]
        strengths.append(strength), folds.append(fold)
    run.model.get_layer("head").get_layer("predictions").set_weights([kernel, bias])
    run.reporter.message(f"Stage logistic: one regression per label, C = {', '.join('-' if c is None else f'{c:g}' for c in strengths)}.")

    def sigmoid(x):
        return 1 / (1 + np.exp(-(x @ kernel + bias)))

    train_p, val_p = sigmoid(train_x), sigmoid(val_x)
    row = {
        "epoch": 0, "accuracy": float(np.mean((train_p >= 0.5) == run.data.train_labels.astype(bool))),
        "loss": binary_log_loss(train_p, run.data.train_labels),
        "val_accuracy": float(np.mean((val_p >= 0.5) == run.data.val_labels.astype(bool))),
        "val_loss": binary_log_loss(val_p, run.data.val_labels), MULTI_LABEL_SCORE: mean_average_precision(val_p, run.data.val_labels),
        "learning_rate": float("nan"),
    }
    return row, strengths, folds


_OPTIMIZERS = {
    "adam": lambda rate: keras.optimizers.Adam(rate),
    "sgd": lambda rate: keras.optimizers.SGD(rate, momentum=0.9, nesterov=True),
    "rmsprop": lambda rate: keras.optimizers.RMSprop(rate),
}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Adam, SGD with Nesterov momentum 0.9, or RMSprop (`transfer.training.options.OPTIMIZERS`)."""
    return _OPTIMIZERS[name](learning_rate)


# The frozen stage's features: the backbone's pooled output for the run's images, computed once.


def _cached_feature_datasets(run: RunState) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """`(train, val)` datasets of pooled backbone features, for fitting the head of `run` alone.

    Training images give one unaugmented view each, or `options.cached_views` augmented views
    (`TrainOptions.frozen_features` is `cached_views`); validation images are never augmented.
    """
    options = run.options
    train_features, val_features = _frozen_features(run, views=options.cached_views if options.frozen_features == "cached_views" else 1)
    return (
        features_dataset(train_features, run.data.train_labels, run.data.global_batch, shuffle=True, seed=options.seed),
        features_dataset(val_features, run.data.val_labels, run.data.global_batch, shuffle=False),
    )


def _frozen_features(run: RunState, views: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of the run's training and validation images; unaugmented ones through the
    disk cache, `views` augmented views of each training image when `views > 1`. The validation
    features stay on the run (`RunState.val_features`) for `head_val_probabilities`."""
    options = run.options
    extractor, cache = extractor_and_cache(run.model, run.spec, options)
    train_features = extract_features(
        extractor, run.data.train_paths, options.batch_size,
        augmentation=run.model.get_layer(AUGMENTATION) if views > 1 else None, views=views, cache=cache,
        reporter=run.reporter,
        description=f"Backbone features, train ({views} view{'s' if views > 1 else ''} per image)",
    )
    run.val_features = _val_features(run, extractor, cache)
    return train_features, run.val_features


def head_val_probabilities(run: RunState) -> np.ndarray:
    """The run's validation probabilities from its head on the pooled validation features (those of
    this process's frozen stage, else from the disk cache): the same numbers as the whole model on
    the images while the backbone is still the frozen one, without running it again."""
    features = run.val_features
    if features is None:  # a resumed run whose frozen stage finished before
        features = _val_features(run, *extractor_and_cache(run.model, run.spec, run.options))
    return run.model.get_layer("head").predict(features, batch_size=run.data.global_batch, verbose=0)


def _val_features(run: RunState, extractor: keras.Model, cache) -> np.ndarray:
    return extract_features(
        extractor, run.data.val_paths, run.options.batch_size, cache=cache,
        reporter=run.reporter, description="Backbone features, validation",
    )
