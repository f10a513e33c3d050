"""`transfer train`: fit a classifier on an image folder and write a run directory.

Stage 1 trains the new head with the backbone frozen (baselines: the whole network, from
scratch). Stage 2, when `finetune_epochs > 0`, unfreezes the top backbone layers (BatchNormalization
stays frozen and in inference mode), recompiles with the smaller fine-tune learning rate and goes on.
Each stage stops early on a validation-loss plateau and restores its best weights; stage 2's
result is kept only if it beats stage 1's best validation loss.

Everything needed to go on after an interruption is kept in the run's staging folder while it
trains (`transfer.rundir`): per stage a `BackupAndRestore` backup of the last two epochs, an
early-stopping record per epoch and the CSV history; and `resume.json` with the options, the data
source and the finished stages. `resume` rebuilds the model from those and goes on. Under
`MultiWorkerMirroredStrategy` every worker keeps such a folder of its own and only the chief
publishes the run (`transfer.distribute`).
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from transfer import rundir
from transfer.augmentation import FLIPS, build_augmentation
from transfer.backbones import check_weights, get_backbone
from transfer.classifier import build_classifier, freeze_backbone, unfreeze_top
from transfer.data import ImageFolder, make_dataset, prepare
from transfer.distribute import (
    STRATEGIES,
    describe,
    is_multi_worker,
    min_across_workers,
    resolve_strategy,
    strategy_name,
    worker_index,
)
from transfer.errors import InvalidOptionError, TrainingInterrupted, WorkerLostError, op_error_message
from transfer.events import SILENT, Reporter
from transfer.features import extract_features, feature_extractor, features_dataset
from transfer.reporting import plot_curves, stage_history
from transfer.sources import Listing, list_folder, read_manifest

OPTIMIZERS = ("adam", "sgd", "rmsprop")
CLASS_WEIGHTS = ("none", "auto")
#: A largest/smallest class ratio from which the imbalance is reported.
IMBALANCE_WARNING = 1.5


@dataclass(frozen=True)
class TrainOptions:
    """Every choice of a training run. `resolved()` fills the defaults that depend on others.

    Attributes:
        backbone: registry name (`transfer.backbones.BACKBONES`).
        weights: `"imagenet"`, `"none"` or a weights file path; `None` means `"imagenet"` for
            pretrained backbones and `"none"` for baselines.
        image_size: square input side; `None` means the backbone's default.
        epochs: stage 1 epochs (frozen backbone, or the whole baseline).
        finetune_epochs: stage 2 epochs; 0 trains the frozen stage only.
        unfreeze: `"all"` or the number of top backbone layers to unfreeze in stage 2.
        lr: stage 1 learning rate.
        finetune_lr: stage 2 learning rate; `None` means `lr / 10`.
        optimizer: `adam`, `sgd` (momentum 0.9, Nesterov) or `rmsprop`.
        batch_size: images per replica per step.
        augment: random flip/rotation/zoom/translation/contrast while training.
        flip: which flips augmentation uses (`transfer.augmentation.FLIPS`).
        dropout: dropout rate of the head.
        head_units: hidden dense units in the head; 0 for none.
        val_split: share of each class held out when there is no `val_dir`.
        val_dir: a pre-split validation folder with the same classes.
        manifest: a `path,label[,split]` CSV file to read instead of a folder.
        dedupe: remove validation images that are byte-for-byte copies of training images.
        class_weight: `none`, or `auto` for scikit-learn's balanced class weights in the loss.
        seed: seeds the split, initialization, shuffling and augmentation.
        strategy: `tf.distribute` strategy (`transfer.distribute.STRATEGIES`).
        patience: epochs without validation-loss improvement before a stage stops early.
        cache_features: in the frozen stage, run the backbone once per image and train the head
            on its cached features (`transfer.features`), instead of every epoch.
        cached_views: with augmentation, cache this many augmented views per image; 0 runs the
            backbone on freshly augmented images every epoch (in the loop).
        mixed_precision: build the model with the `mixed_float16` policy (float16 compute,
            float32 weights and softmax, loss scaling); pays off on GPUs with tensor cores. XLA
            needs no option: Keras compiles with `jit_compile="auto"`, on when a GPU is present.
    """

    backbone: str = "resnet50"
    weights: str | None = None
    image_size: int | None = None
    epochs: int = 10
    finetune_epochs: int = 0
    unfreeze: str = "all"
    lr: float = 1e-3
    finetune_lr: float | None = None
    optimizer: str = "adam"
    batch_size: int = 32
    augment: bool = True
    flip: str = "horizontal"
    dropout: float = 0.2
    head_units: int = 0
    val_split: float = 0.2
    val_dir: str | None = None
    manifest: str | None = None
    dedupe: bool = False
    class_weight: str = "none"
    seed: int = 42
    strategy: str = "auto"
    patience: int = 5
    cache_features: bool = True
    cached_views: int = 0
    mixed_precision: bool = False

    def resolved(self) -> TrainOptions:
        """Validates every value and returns the options with all defaults filled in.

        Raises:
            InvalidOptionError: naming the option, the value received and what is allowed.
        """
        spec = get_backbone(self.backbone)
        weights = self.weights or ("imagenet" if spec.pretrained else "none")
        image_size = self.image_size or spec.input_size
        finetune_lr = self.finetune_lr if self.finetune_lr is not None else self.lr / 10
        _require(self.epochs >= 1, "--epochs", self.epochs, "an integer >= 1")
        _require(self.finetune_epochs >= 0, "--finetune-epochs", self.finetune_epochs, "an integer >= 0")
        _require(self.lr > 0, "--lr", self.lr, "a number > 0")
        _require(finetune_lr > 0, "--finetune-lr", finetune_lr, "a number > 0")
        _require(self.batch_size >= 1, "--batch-size", self.batch_size, "an integer >= 1")
        _require(0 < self.val_split < 1, "--val-split", self.val_split, "a fraction between 0 and 1")
        _require(0 <= self.dropout < 1, "--dropout", self.dropout, "a rate in [0, 1)")
        _require(self.head_units >= 0, "--head-units", self.head_units, "an integer >= 0 (0: no hidden layer)")
        _require(self.patience >= 1, "--patience", self.patience, "an integer >= 1")
        _require(self.optimizer in OPTIMIZERS, "--optimizer", self.optimizer, " | ".join(OPTIMIZERS))
        _require(self.strategy in STRATEGIES, "--strategy", self.strategy, " | ".join(STRATEGIES))
        _require(self.class_weight in CLASS_WEIGHTS, "--class-weight", self.class_weight, " | ".join(CLASS_WEIGHTS))
        if self.manifest and self.val_dir:
            raise InvalidOptionError(
                f"Received --manifest {self.manifest} and --val-dir {self.val_dir}; a manifest gives the "
                f"validation images in its split column instead."
            )
        _require(self.flip in FLIPS, "--flip", self.flip, " | ".join(FLIPS))
        _require(
            image_size >= spec.min_input_size, "--image-size", image_size,
            f"at least {spec.min_input_size} for {spec.name}",
        )
        _require(
            self.unfreeze == "all" or (self.unfreeze.isdigit() and int(self.unfreeze) >= 1),
            "--unfreeze", self.unfreeze, "'all' or a number of top backbone layers >= 1",
        )
        check_weights(spec, weights)
        _require(self.cached_views >= 0, "--cached-views", self.cached_views, "an integer >= 0")
        if self.cached_views and not (self.augment and self.cache_features):
            raise InvalidOptionError(
                f"--cached-views {self.cached_views} caches augmented views, so it needs --augment and "
                f"--cache-features. Without augmentation every epoch sees the same image and one "
                f"cached view is exact."
            )
        if not spec.pretrained and self.finetune_epochs:
            raise InvalidOptionError(
                f"{spec.name} is trained from scratch in one stage; received --finetune-epochs "
                f"{self.finetune_epochs}. Use --epochs for baselines."
            )
        return dataclasses.replace(
            self, weights=weights, image_size=image_size, finetune_lr=finetune_lr
        )

    @property
    def frozen_features(self) -> str:
        """How the frozen stage gets backbone features: `cached` (one view, exact without
        augmentation), `cached_views` (K augmented views) or `in_loop` (backbone every epoch)."""
        if not self.cache_features or (self.augment and not self.cached_views):
            return "in_loop"
        return "cached_views" if self.augment else "cached"

    @property
    def unfreeze_count(self) -> int | None:
        return None if self.unfreeze == "all" else int(self.unfreeze)


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    history: pd.DataFrame
    model: keras.Model


def train(
    data_dir: Path | None,
    out_dir: Path,
    options: TrainOptions = TrainOptions(),
    *,
    force: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    reporter: Reporter = SILENT,
    verbose: int | str = "auto",
) -> TrainResult:
    """Trains a classifier on the image folder `data_dir` (or `options.manifest`) into `out_dir`.

    Args:
        data_dir: one subfolder of images per class; `None` with `options.manifest`.
        out_dir: the run directory to create (see `transfer.rundir`).
        options: the run's choices; validated before any heavy work.
        force: replace an existing run at `out_dir`, or discard an interrupted one.
        strategy: a ready `tf.distribute.Strategy`, overriding `options.strategy`.
        reporter: receives messages and progress.
        verbose: Keras `fit` verbosity (progress bars).

    Returns:
        The run directory, the final metrics and the per-epoch history.

    Raises:
        TransferError: bad options, data or weights, or an existing output; nothing is written.
        TrainingInterrupted: on Ctrl-C; `resume(out_dir)` goes on from the last epoch.
    """
    started = time.perf_counter()
    options = options.resolved()
    spec = get_backbone(options.backbone)
    out_dir = Path(out_dir)
    worker = worker_index()  # None on the chief, or on a single machine
    if worker is None:
        rundir.check_destination(out_dir, force)
    rundir.check_no_interrupted_run(out_dir, force, worker)
    listing = _list_data(data_dir, options)
    strategy = strategy or resolve_strategy(options.strategy)
    model = _build_model(spec, options, len(listing.class_names), strategy, reporter)
    folder = prepare(
        listing, image_size=options.image_size, val_split=options.val_split, seed=options.seed,
        dedupe=options.dedupe, reporter=reporter,
    )
    staging = rundir.staging_dir(out_dir, worker)
    rundir.write_labels(staging / rundir.LABELS, folder.class_names)
    folder.examples.to_csv(staging / rundir.SPLIT, index=False)
    folder.skipped.to_csv(staging / rundir.SKIPPED, index=False)
    folder.duplicates.to_csv(staging / rundir.DUPLICATES, index=False)
    state = {"options": dataclasses.asdict(options), "source": folder.source, "stages_done": []}
    rundir.write_json(staging / rundir.RESUME_STATE, state)
    return _run(model, spec, options, folder, staging, out_dir, state, strategy, reporter, verbose, started)


def resume(
    run_dir: Path,
    *,
    strategy: tf.distribute.Strategy | None = None,
    reporter: Reporter = SILENT,
    verbose: int | str = "auto",
) -> TrainResult:
    """Continues an interrupted `train` of `run_dir` from its last completed epoch.

    The options, split and skipped files are the interrupted run's. Finished stages are not run
    again; the stage in progress restarts from its last epoch's weights and optimizer state
    (`keras.callbacks.BackupAndRestore`), with its early-stopping record and best checkpoint.

    Raises:
        InvalidOptionError: `run_dir` has no interrupted training to resume.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    staging = rundir.partial_dir(run_dir, worker_index())
    if not (staging / rundir.RESUME_STATE).is_file():
        finished = (run_dir / rundir.METRICS).is_file()
        raise InvalidOptionError(
            f"--resume {run_dir}: " + (
                "that run finished; there is nothing to resume." if finished else
                f"no interrupted training found (expected {staging / rundir.RESUME_STATE}). Pass the "
                f"--out folder of a `transfer train` that was interrupted."
            )
        )
    state = rundir.read_json(staging / rundir.RESUME_STATE)
    state["resumed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    options = TrainOptions(**state["options"])
    spec = get_backbone(options.backbone)

    def table(name):
        return rundir.read_table(staging / name)

    duplicates = table(rundir.DUPLICATES).assign(removed=lambda d: d["removed"] == "True")
    folder = ImageFolder(
        rundir.read_labels(staging / rundir.LABELS), table(rundir.SPLIT), table(rundir.SKIPPED), duplicates,
        state["source"],
    )
    done = [entry["stage"] for entry in state["stages_done"]]
    reporter.message(f"Resuming {run_dir} from {staging}" + (f" (finished stages: {', '.join(done)})" if done else "") + ".")
    strategy = strategy or resolve_strategy(options.strategy)
    model = _build_model(spec, options, len(folder.class_names), strategy, reporter)
    return _run(model, spec, options, folder, staging, run_dir, state, strategy, reporter, verbose, started)


def _list_data(data_dir: Path | None, options: TrainOptions) -> Listing:
    if options.manifest:
        if data_dir is not None:
            raise InvalidOptionError(
                f"Received both DATA_DIR {data_dir} and --manifest {options.manifest}; give one of them."
            )
        return read_manifest(Path(options.manifest))
    if data_dir is None:
        raise InvalidOptionError("No data given: pass DATA_DIR (one subfolder per class) or --manifest FILE.csv.")
    return list_folder(Path(data_dir), Path(options.val_dir) if options.val_dir else None)


def _build_model(spec, options, num_classes, strategy, reporter) -> keras.Model:
    """The classifier, seeded, in the strategy's scope, with the options' precision policy."""
    keras.utils.set_random_seed(options.seed)
    reporter.message(f"Strategy: {describe(strategy)}")
    previous_policy = keras.config.dtype_policy()
    if options.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")  # layers take the policy when built
    try:
        with strategy.scope():
            model = build_classifier(
                spec,
                num_classes=num_classes,
                image_size=options.image_size,
                weights=None if options.weights == "none" else options.weights,
                dropout_rate=options.dropout,
                head_units=options.head_units,
                augmentation=build_augmentation(options.flip, options.seed) if options.augment else None,
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if spec.pretrained and options.finetune_epochs:
        unfreeze_top(model, spec, options.unfreeze_count)  # validates --unfreeze before heavy work
        freeze_backbone(model, spec)
    return model


def _run(model, spec, options, folder, staging, out_dir, state, strategy, reporter, verbose, started) -> TrainResult:
    try:
        return _fit_stages(model, spec, options, folder, staging, out_dir, state, strategy, reporter, verbose, started)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"Training interrupted. The best checkpoint so far is {staging / rundir.CHECKPOINT}; "
            f"continue with `transfer train --resume {out_dir}`."
        ) from None
    except _PEER_FAILURES as error:
        if not is_multi_worker(strategy):
            raise
        raise WorkerLostError(
            f"A worker of the cluster stopped or cannot be reached ({type(error).__name__}: "
            f"{op_error_message(error)[:200]}). Nothing was published; this worker's state "
            f"is in {staging}. Start every worker again with `transfer train --resume {out_dir}` and "
            f"its TF_CONFIG: training goes on from the last epoch all of them completed."
        ) from None


#: What a collective operation raises when another worker dies or cannot be reached.
_PEER_FAILURES = (
    tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
    tf.errors.CancelledError, tf.errors.InternalError,
)


def _fit_stages(model, spec, options, folder, staging, out_dir, state, strategy, reporter, verbose, started) -> TrainResult:
    _report_data(folder, options, reporter)
    class_weight = folder.class_weights() if options.class_weight == "auto" else None
    if class_weight:
        reporter.message("Class weights (balanced): " + ", ".join(
            f"{name} {class_weight[i]:.3f}" for i, name in enumerate(folder.class_names)
        ))
    global_batch = options.batch_size * strategy.num_replicas_in_sync
    train_paths, train_labels = folder.paths_and_indices("train")
    val_paths, val_labels = folder.paths_and_indices("val")
    train_data = make_dataset(train_paths, train_labels, options.image_size, global_batch, shuffle=True, seed=options.seed)
    val_data = make_dataset(val_paths, val_labels, options.image_size, global_batch, shuffle=False)

    frozen_features = options.frozen_features if spec.pretrained else None
    if frozen_features not in (None, "in_loop") and is_multi_worker(strategy):
        reporter.message(
            "Feature caching is off under multi-worker training (each worker would cache only its own "
            "shard); the frozen backbone runs in the loop."
        )
        frozen_features = "in_loop"
    stages = [("frozen" if spec.pretrained else "scratch", options.epochs, options.lr, None)]
    if spec.pretrained and options.finetune_epochs:
        stages.append(("finetune", options.finetune_epochs, options.finetune_lr, options.unfreeze_count))

    done = {entry["stage"]: entry for entry in state["stages_done"]}
    histories = [stage_history(stage, _stage_dir(staging, stage) / rundir.HISTORY) for stage in done]
    epoch = sum(len(history) for history in histories)
    best_loss, best_stage, best_weights = state.get("best_loss", float("inf")), state.get("best_stage"), None
    if done:
        best_weights = _load_weights(staging / _BEST_WEIGHTS)
        model.set_weights(best_weights)
    stage_seconds = {stage: entry["seconds"] for stage, entry in done.items()}
    for stage, epochs, learning_rate, unfreeze in stages:
        if stage in done:
            continue
        stage_started = time.perf_counter()
        stage_dir = _stage_dir(staging, stage)
        stage_dir.mkdir(parents=True, exist_ok=True)
        _agree_on_backup(stage_dir / "backup", strategy)
        fit_model, fit_train, fit_val = model, train_data, val_data
        if stage == "frozen" and frozen_features != "in_loop":
            fit_model = model.get_layer("head")
            fit_train, fit_val = _cached_features(
                model, spec, options, (train_paths, train_labels), (val_paths, val_labels), global_batch, reporter
            )
        elif stage == "frozen" and options.augment and options.cache_features:
            reporter.message(
                "Augmentation is on, so the frozen backbone runs on every image every epoch; "
                "--cached-views K caches K augmented views per image instead, much faster."
            )
        if stage == "finetune":
            unfrozen = unfreeze_top(model, spec, unfreeze)
            reporter.message(
                f"Unfreezing the top {options.unfreeze} backbone layers: {len(unfrozen)} with trainable "
                f"weights (BatchNormalization stays frozen)."
            )
        reporter.message(f"Stage {stage}: up to {epochs} epochs at learning rate {learning_rate:g}.")
        with strategy.scope():
            fit_model.compile(
                optimizer=make_optimizer(options.optimizer, learning_rate),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
        early_stopping = _ResumableEarlyStopping(
            stage_dir, monitor="val_loss", patience=options.patience, restore_best_weights=True
        )
        stage_best = min(best_loss, early_stopping.saved_best())
        callbacks = [
            early_stopping,
            keras.callbacks.ReduceLROnPlateau(  # adds learning_rate to the logs
                monitor="val_loss", factor=0.2, patience=max(1, options.patience // 2), min_lr=1e-7
            ),
            _FullModelCheckpoint(
                model, staging / rundir.CHECKPOINT, monitor="val_loss", save_best_only=True,
                initial_value_threshold=None if stage_best == float("inf") else stage_best,
            ),
            keras.callbacks.CSVLogger(stage_dir / rundir.HISTORY, append=True),
            # Last, so that a backup marks an epoch whose other records are written.
            keras.callbacks.BackupAndRestore(stage_dir / "backup", double_checkpoint=True, delete_checkpoint=False),
        ]
        if (stage_dir / "backup").is_dir():
            reporter.message(f"Stage {stage}: restoring the weights and optimizer of the last completed epoch.")
        fit_model.fit(
            fit_train, validation_data=fit_val, epochs=epoch + epochs, initial_epoch=epoch,
            callbacks=callbacks, verbose=verbose, shuffle=False,  # the datasets shuffle themselves
            class_weight=class_weight,
        )
        history = stage_history(stage, stage_dir / rundir.HISTORY)
        histories.append(history)
        epoch += len(history)
        stage_loss = float("inf") if early_stopping.best is None else float(early_stopping.best)
        if best_weights is None or stage_loss < best_loss:
            best_loss, best_weights, best_stage = stage_loss, model.get_weights(), stage
            _save_weights(staging / _BEST_WEIGHTS, best_weights)
        else:
            reporter.message(
                f"Stage {stage} did not improve the best validation loss ({best_loss:.4f}); keeping "
                f"the weights of stage {best_stage}."
            )
            model.set_weights(best_weights)
        stage_seconds[stage] = round(time.perf_counter() - stage_started, 2)
        state["stages_done"].append({"stage": stage, "seconds": stage_seconds[stage]})
        state.update(best_loss=float(best_loss), best_stage=best_stage)
        rundir.write_json(staging / rundir.RESUME_STATE, state)

    val_probabilities = model.predict(val_data.map(_pixels_only), verbose=0)
    val_loss = keras.losses.sparse_categorical_crossentropy(val_labels, val_probabilities)
    history = pd.concat(histories, ignore_index=True)
    metrics = {
        "val_accuracy": float(np.mean(np.argmax(val_probabilities, axis=1) == val_labels)),
        "val_loss": float(np.mean(keras.ops.convert_to_numpy(val_loss))),
        "num_classes": len(folder.class_names),
        "num_train": len(train_paths),
        "num_val": len(val_paths),
        "num_skipped": len(folder.skipped),
        "num_duplicates": len(folder.duplicates),
        "best_stage": best_stage,
        "epochs_run": epoch,
        "stage_seconds": stage_seconds,
        "train_seconds": round(time.perf_counter() - started, 1),
        "resumed": "resumed_at" in state,
    }
    config = {
        **dataclasses.asdict(options),
        "data": folder.source,
        "class_names": folder.class_names,
        "class_weights": class_weight,
        "pretrained": spec.pretrained,
        "frozen_features": frozen_features,
        "strategy_resolved": strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "global_batch_size": global_batch,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
    }
    model.save(staging / rundir.MODEL)
    rundir.write_json(staging / rundir.METRICS, metrics)
    history.to_csv(staging / rundir.HISTORY, index=False)
    plot_curves(history, staging / rundir.CURVES)
    rundir.write_json(staging / rundir.CONFIG, config)
    if worker_index() is not None:  # a non-chief worker: its copy was only needed while training
        shutil.rmtree(staging)
        return TrainResult(out_dir, metrics, history, model)
    for name in ("stages", _BEST_WEIGHTS, rundir.RESUME_STATE):  # only needed to resume
        path = staging / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    rundir.publish(staging, out_dir)
    return TrainResult(out_dir, metrics, history, model)


_BEST_WEIGHTS = "best_weights.npz"


def _pixels_only(pixels, label):
    return pixels


def _stage_dir(staging: Path, stage: str) -> Path:
    return staging / "stages" / stage


def _save_weights(path: Path, weights: list[np.ndarray]) -> None:
    with rundir.atomic_path(path) as temporary:
        np.savez(temporary, *weights)


def _load_weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Adam, SGD with Nesterov momentum 0.9, or RMSprop at `learning_rate`."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise InvalidOptionError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; received {name!r}.")


def _cached_features(model, spec, options, train, val, batch_size, reporter):
    """`(train, val)` datasets of pooled backbone features for training the head alone."""
    extractor = feature_extractor(model, spec)
    views = options.cached_views if options.augment else 1
    train_features = extract_features(
        extractor, train[0], options.image_size, options.batch_size,
        augmentation=model.get_layer("augmentation") if options.augment else None, views=views,
        reporter=reporter, description=f"Backbone features, train ({views} view{'s' if views > 1 else ''} per image)",
    )
    val_features = extract_features(
        extractor, val[0], options.image_size, options.batch_size,
        reporter=reporter, description="Backbone features, validation",
    )
    return (
        features_dataset(train_features, train[1], batch_size, shuffle=True, seed=options.seed),
        features_dataset(val_features, val[1], batch_size, shuffle=False),
    )


class _FullModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Saves the whole classifier, also while only its head is being fit on cached features."""

    def __init__(self, full_model: keras.Model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._full_model = full_model

    def set_model(self, model):
        super().set_model(self._full_model)


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose best value, patience count and best weights survive a restart.

    After each epoch its record for that epoch goes to `state_dir` (and the best weights whenever
    they improve). A new instance on the same folder starts from the record of the last epoch the
    stage's backup holds (`_backup_epoch`), so the two always describe the same epoch.
    """

    def __init__(self, state_dir: Path, **kwargs):
        super().__init__(**kwargs)
        self._dir = Path(state_dir)
        self._records = self._dir / "early_stopping.json"

    def _restored(self) -> dict | None:
        last = _backup_epoch(self._dir / "backup") - 1  # the last completed epoch, 0-based
        if last < 0 or not self._records.is_file():
            return None
        return rundir.read_json(self._records).get(str(last))

    def saved_best(self) -> float:
        record = self._restored()
        return record["best"] if record else float("inf")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        record = self._restored()
        if record:
            self.best, self.wait, self.best_epoch = record["best"], record["wait"], record["best_epoch"]
            self.best_weights = _load_weights(self._weights(self.best_epoch))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.best is None:
            return
        if self.best_epoch == epoch:
            _save_weights(self._weights(epoch), self.best_weights)
        records = rundir.read_json(self._records) if self._records.is_file() else {}
        records[str(epoch)] = {"best": float(self.best), "wait": self.wait, "best_epoch": self.best_epoch}
        rundir.write_json(self._records, records)
        keep = {self._weights(r["best_epoch"]).name for r in list(records.values())[-2:]}
        for old in self._dir.glob("early_stopping_best-*.npz"):
            if old.name not in keep:
                old.unlink()

    def _weights(self, epoch: int) -> Path:
        return self._dir / f"early_stopping_best-{epoch}.npz"


def _backup_epoch(backup_dir: Path, previous: bool = False) -> int:
    """Epochs completed in a `BackupAndRestore` folder (its previous backup with `previous`)."""
    record = Path(backup_dir) / ("training_metadata.json.bkp" if previous else "training_metadata.json")
    return int(rundir.read_json(record)["epoch"]) if record.is_file() else 0


def _agree_on_backup(backup_dir: Path, strategy: tf.distribute.Strategy) -> None:
    """Makes every worker of a cluster resume a stage from the same epoch.

    Workers run in lockstep, but one can be stopped after finishing an epoch and before saving its
    backup, so backups can be one epoch apart. All go on from the oldest; a worker one epoch ahead
    falls back to its previous backup (kept by `double_checkpoint`).

    Raises:
        WorkerLostError: the backups cannot be brought to one epoch.
    """
    if not is_multi_worker(strategy):
        return
    mine = _backup_epoch(backup_dir)
    agreed = min_across_workers(strategy, mine)
    if mine == agreed:
        return
    if agreed == 0:
        shutil.rmtree(backup_dir)
    elif _backup_epoch(backup_dir, previous=True) == agreed:
        for name in ("latest.weights.h5", "training_metadata.json"):
            shutil.copy(Path(backup_dir) / f"{name}.bkp", Path(backup_dir) / name)
    else:
        raise WorkerLostError(
            f"This worker's backup in {backup_dir} is at epoch {mine} and another's at {agreed}; they "
            f"cannot be brought together. Start the run again on every worker with --force."
        )


def _report_data(folder: ImageFolder, options: TrainOptions, reporter: Reporter) -> None:
    counts = folder.counts()
    lines = [
        f"  {name}: {row['train']} train, {row['val']} val" + (f", {row['skipped']} skipped" if row["skipped"] else "")
        for name, row in counts.iterrows()
    ]
    reporter.message(f"{len(folder.class_names)} classes, usable images per class:\n" + "\n".join(lines))
    if len(folder.skipped):
        reporter.warning(f"Skipped {len(folder.skipped)} file(s) (listed in {rundir.SKIPPED}):")
        for row in folder.skipped.itertuples():
            reporter.warning(f"  {row.path}: {row.reason}")
    if len(folder.duplicates):
        action = (
            "removed from validation (--dedupe)" if options.dedupe
            else "they stay in validation and inflate its accuracy; --dedupe removes them"
        )
        reporter.warning(
            f"{len(folder.duplicates)} validation image(s) are byte-for-byte copies of training images "
            f"(listed in {rundir.DUPLICATES}); {action}:"
        )
        for row in folder.duplicates.head(10).itertuples():
            reporter.warning(f"  {row.val_path} = {row.train_path}")
        if len(folder.duplicates) > 10:
            reporter.warning(f"  ... and {len(folder.duplicates) - 10} more")
    ratio = folder.imbalance()
    if ratio >= IMBALANCE_WARNING:
        train = counts["train"]
        advice = "class weights are on (--class-weight auto)" if options.class_weight == "auto" else (
            "--class-weight auto weights the loss to balance them"
        )
        reporter.warning(
            f"Classes are imbalanced: {train.idxmax()} has {train.max()} training images, {train.idxmin()} "
            f"{train.min()} ({ratio:.1f}x); {advice}."
        )


def _require(condition: bool, option: str, received, allowed: str) -> None:
    if not condition:
        raise InvalidOptionError(f"{option} must be {allowed}; received {received!r}.")
