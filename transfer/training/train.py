"""`transfer train`: fit a classifier on an image folder and write a run directory.

The recipe (`_fine_tune`) is the one of the Keras transfer-learning guide and fastai's
`fine_tune`: fit the new head with the backbone frozen; then unfreeze the top backbone layers
(BatchNormalization stays frozen and in inference mode) and fit again at a smaller learning rate.
Baselines train from scratch in one stage. Each stage stops early on a validation-loss plateau
and keeps its weights only if they beat the best so far (`transfer.training.stages`). What the
stages share is one `RunState`, built here from the functions of `transfer.training.state`; the
finished run is measured and published by `transfer.training.publish`.

Everything needed to go on after an interruption is kept in the run's staging folder while it
trains (`transfer.outputs.layout`, `transfer.outputs.artifacts`); `resume` rebuilds the model from it and goes on. Under
`MultiWorkerMirroredStrategy` every worker keeps such a folder of its own and only the chief
publishes the run (`transfer.training.distribute`).

Every option, the data folder's structure and the output location are checked before TensorFlow
is imported (the modules that need it are imported inside the functions that run the work), so a
mistake is answered in well under a second and before any image is read.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

from transfer.outputs import artifacts, layout, publishing
from transfer.models.registry import BackboneSpec
from transfer.core.errors import (DataError, InvalidOptionError, OutputLocationError, TrainingInterrupted, WorkerLostError,
                             op_error_message, stop_at_safe_points)
from transfer.core.choices import default_batch_size
from transfer.training.options import TrainOptions
from transfer.training.distribute import worker_index
from transfer.training.preflight import preflight, with_labels_kind
from transfer.core.progress import SILENT, Reporter
from transfer.training.publish import TrainResult, publish_run
from transfer.training.state import RunState, build_model, frozen_features, restore_stages, run_data

if TYPE_CHECKING:
    import tensorflow as tf


def train(
    data_dir: Path | None,
    out_dir: Path,
    options: TrainOptions = TrainOptions(),
    *,
    force: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    reporter: Reporter = SILENT,
    verbose: int | str = "auto",
    probed: dict | None = None,
) -> TrainResult:
    """Trains a classifier on the image folder `data_dir` (or `options.manifest`) into `out_dir`.

    Args:
        data_dir: one subfolder of images per class; `None` with `options.manifest`.
        out_dir: the run directory to create (see `transfer.outputs.layout`).
        options: the run's choices; validated before any heavy work.
        force: replace an existing run at `out_dir`, or discard an interrupted one.
        strategy: a ready `tf.distribute.Strategy`, overriding `options.strategy`.
        reporter: receives messages and progress.
        verbose: Keras `fit` verbosity (progress bars).
        probed: how the backbone was chosen (`--backbone auto` is resolved before training, by
            `transfer.selection.probe.train_auto`), recorded in `config.json`.

    Returns:
        The run directory, the final metrics and the per-epoch history.

    Raises:
        TransferError: bad options, data or weights, or an existing output; nothing is written.
        TrainingInterrupted: on Ctrl-C; `resume(out_dir)` goes on from the last epoch.
    """
    started = time.perf_counter()
    given, options = options, options.resolved()
    if given.head_note(options):  # options for gradient descent changed the default head
        reporter.message(given.head_note(options))
    spec = options.backbone_spec()
    out_dir = Path(out_dir)
    worker = worker_index()  # None on the chief, or on a single machine
    listing = preflight(data_dir, out_dir, options, kind="run", force=force, worker=worker)
    options = with_labels_kind(options, listing, reporter)
    publishing.check_no_interrupted_run(out_dir, force, worker)
    if spec.note and options.backbone_layer is None:
        reporter.message(spec.note)
    if spec.pretrained and options.weights == "none":
        reporter.warning(
            f"--weights none: the frozen {spec.name} keeps its random initialization, so the head learns from "
            f"random features. Leave --weights at imagenet (or a weights file) for transfer learning."
        )

    from transfer.data.folders import prepare
    from transfer.training.distribute import resolve_strategy

    strategy = strategy or resolve_strategy(options.strategy)
    model = build_model(spec, options, len(listing.class_names), strategy, reporter)
    folder = prepare(
        listing, image_size=options.image_size, val_split=options.val_split, seed=options.seed,
        dedupe=options.dedupe, reporter=reporter,
    )
    if options.batch_size is None:
        options = dataclasses.replace(options, batch_size=default_batch_size(len(folder.paths_and_indices("train")[0])))
        reporter.message(f"Batch size {options.batch_size} per replica (at most 32, at least 10 steps an epoch, at least 8).")
    elif options.batch_size > (train_count := len(folder.paths_and_indices("train")[0])):
        reporter.message(f"Note: --batch-size {options.batch_size} is more than the {train_count} training images: an epoch is "
                         f"one step, on all of them. A smaller batch gives more steps an epoch.")
    files = artifacts.Run(publishing.staging_dir(out_dir, "run", worker))
    files.write_data(folder)
    if options.tensorboard:
        reporter.message(
            f"TensorBoard logs go to {files.path / layout.TENSORBOARD_LOGS} while training, then to "
            f"{out_dir / layout.TENSORBOARD_LOGS}; watch them with: tensorboard --logdir {files.path / layout.TENSORBOARD_LOGS}"
        )
    record = {"options": dataclasses.asdict(options), "source": folder.source, "data_folders": listing.folders, "stages_done": [],
              "backbone_sha256": backbone_sha256(spec, options), "probe": probed}
    publishing.write_json(files.resume_file, record)
    return _train_and_publish(RunState(
        model=model, spec=spec, options=options, folder=folder, data=run_data(folder, options, strategy), files=files,
        out_dir=out_dir, record=record, strategy=strategy, reporter=reporter, verbose=verbose, started=started,
        histories=[], best_weights=None,
    ))


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
    publishing.lock_destination(run_dir, worker_index())
    files = artifacts.Run(layout.partial_dir(run_dir, worker_index()))
    if not files.resume_file.is_file():
        finished = (run_dir / layout.METRICS).is_file()
        raise InvalidOptionError(
            f"--resume {run_dir}: " + (
                "that run finished; there is nothing to resume." if finished else
                f"no interrupted training found (expected {files.resume_file}). Pass the "
                f"--out folder of a `transfer train` that was interrupted."
            )
        )
    from transfer.data.folders import ImageFolder
    from transfer.training.distribute import resolve_strategy

    record = publishing.read_json(files.resume_file)
    record["resumed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    options = TrainOptions(**record["options"])
    spec = options.backbone_spec()
    folder = ImageFolder(files.labels(), files.split(), files.skipped(), files.duplicates(), record["source"])
    done = [entry["stage"] for entry in record["stages_done"]]
    reporter.message(f"Resuming {run_dir} from {files.path}" + (f" (finished stages: {', '.join(done)})" if done else "") + ".")
    strategy = strategy or resolve_strategy(options.strategy)
    model = build_model(spec, options, len(folder.class_names), strategy, reporter)
    histories, best_weights = restore_stages(files, record, model)
    return _train_and_publish(RunState(
        model=model, spec=spec, options=options, folder=folder, data=run_data(folder, options, strategy), files=files,
        out_dir=run_dir, record=record, strategy=strategy, reporter=reporter, verbose=verbose, started=started,
        histories=histories, best_weights=best_weights,
    ))


def _fine_tune(run: RunState) -> None:
    """Freeze, fit the head; unfreeze the top, fit at the smaller rate. Baselines: one stage."""
    from transfer.models.classifier import unfreeze_top
    from transfer.training.stages import Stage, fit_logistic, fit_stage

    options = run.options
    if not options.transfers:
        return fit_stage(run, Stage("scratch", options.epochs, options.lr, options.schedule))
    if options.head == "logistic":
        fit_logistic(run)
    else:
        fit_stage(run, Stage("frozen", options.epochs, options.lr, options.schedule), cached_features=frozen_features(run) != "in_loop")
    if options.finetune_epochs:
        unfrozen = unfreeze_top(run.model, run.spec, options.unfreeze_count)
        run.reporter.message(
            f"Unfreezing {'all' if options.unfreeze == 'all' else f'the top {options.unfreeze}'} backbone layers: {len(unfrozen)} with trainable "
            f"weights (BatchNormalization stays frozen)."
        )
        fit_stage(run, Stage("finetune", options.finetune_epochs, options.finetune_lr, options.finetune_schedule))


def _train_and_publish(run: RunState) -> TrainResult:
    import tensorflow as tf

    from transfer.data.folders import report_data
    from transfer.training.distribute import is_multi_worker

    report_data(run.folder, run.reporter, dedupe=run.options.dedupe, class_weight=run.options.class_weight)
    if run.data.class_weight:
        run.reporter.message("Class weights (balanced): " + ", ".join(
            f"{name} {run.data.class_weight[i]:.3f}" for i, name in enumerate(run.folder.class_names)
        ))
    features = frozen_features(run)
    if features == "in_loop" and run.options.frozen_features != "in_loop":
        run.reporter.message(
            "Feature caching is off under multi-worker training (each worker would cache only its own "
            "shard); the frozen backbone runs in the loop."
        )
    elif features == "in_loop" and run.options.mixing and run.options.cache_features:
        run.reporter.message(
            "MixUp/CutMix mix images, so the frozen backbone runs on the mixed images every epoch "
            "(mixing cached pooled features would be another method: manifold mixing)."
        )
    elif features == "cached" and run.options.augment and run.options.head != "logistic":  # fit_logistic says it
        run.reporter.message(
            "Frozen stage: the head trains on one unaugmented view of each image, its features computed once "
            "(augmentation applies where the backbone trains; --cached-views K caches K augmented views, 0 "
            "augments in the loop)."
        )
    try:
        with stop_at_safe_points():  # Ctrl-C stops at a batch's end, never inside TensorFlow's calls
            _fine_tune(run)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"Training interrupted. The best checkpoint so far is {run.files.path / layout.CHECKPOINT}; "
            f"continue with `transfer train --resume {run.out_dir}`."
        ) from None
    except OSError as error:
        raise _write_failure(run, error) from None
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:  # an image gone or changed
        raise DataError(
            f"An image of the run can no longer be read ({op_error_message(error)[:300]}); the data changed "
            f"since the run's split was made. Restore it, or start again with --force. Progress is in {run.files.path}."
        ) from None
    except (  # what a collective operation raises when another worker dies or cannot be reached
        tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
        tf.errors.CancelledError, tf.errors.InternalError,
    ) as error:
        if not is_multi_worker(run.strategy):
            raise
        raise WorkerLostError(
            f"A worker of the cluster stopped or cannot be reached ({type(error).__name__}: "
            f"{op_error_message(error)[:200]}). Nothing was published; this worker's state "
            f"is in {run.files.path}. Start every worker again with `transfer train --resume {run.out_dir}` and "
            f"its TF_CONFIG: training goes on from the last epoch all of them completed."
        ) from None
    try:
        with stop_at_safe_points():  # a Ctrl-C while the run is measured and written: nothing is published
            return publish_run(run)
    except OSError as error:
        raise _write_failure(run, error) from None


def _write_failure(run: RunState, error: OSError) -> OutputLocationError:
    """A full disk or a lost permission: the earlier run is untouched and this one can go on."""
    return OutputLocationError(
        f"Cannot write {error.filename or run.files.path}: {error.strerror or error}. Nothing was published"
        f"{f' (the earlier run at {run.out_dir} is unchanged)' if Path(run.out_dir).is_dir() else ''}; this run's progress is in {run.files.path}. Free some space and continue with "
        f"`transfer train --resume {run.out_dir}`, or start again with --force."
    )


def backbone_sha256(spec: BackboneSpec, options: TrainOptions) -> str | None:
    """The SHA-256 of the model file (or local preset folder) the backbone was read from: as training
    starts, or as recorded by the run whose backbone this one reuses."""
    from transfer.models.external import sha256_of

    if spec.source is None:
        return None
    if options.source_run is not None:
        return artifacts.Run.open(options.source_run).config().get("backbone_sha256")
    return sha256_of(spec.source)
