"""What a training run carries from one stage to the next (`RunState`), and building what it holds:
the model (`build_model`), the run's images as datasets (`run_data`), and the stages an interrupted
run finished with its best weights (`restore_stages`). `train` and `resume`
(`transfer.training.train`) call these and hand the state they return to the stages
(`transfer.training.stages`); after each stage the state's `record` is written to the run's
`resume.json`, so a finished stage is never run again.

Importing this module imports no TensorFlow: the functions that need it import it when they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transfer.core.progress import Reporter
from transfer.models.registry import BackboneSpec
from transfer.outputs import artifacts, publishing
from transfer.training.options import TrainOptions

if TYPE_CHECKING:
    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from transfer.data.folders import ImageFolder


@dataclass(frozen=True)
class RunData:
    """The run's images as the stages use them: paths and label indices (multi-label: 0/1 rows) of
    each split, their datasets batched with the global batch (the training one shuffled), and the
    balanced class weights (`--class-weight auto`, else `None`)."""

    global_batch: int
    class_weight: dict[int, float] | None
    train_paths: list[str]
    train_labels: np.ndarray
    val_paths: list[str]
    val_labels: np.ndarray
    train_data: tf.data.Dataset
    val_data: tf.data.Dataset


@dataclass(kw_only=True)
class RunState:
    """One training run, from its first stage to its publication.

    Attributes:
        model: the full classifier (pixels in, probabilities out).
        spec, options: the backbone and the run's resolved options.
        folder: the checked, split data; `data`: its images as the stages use them (`run_data`).
        files: the run's staging folder (`transfer.outputs.artifacts.Run`), published when training ends.
        out_dir: where the run is published.
        record: what `resume.json` holds: options, data source, finished stages, best loss.
        strategy: the `tf.distribute` strategy the model was built under.
        reporter, verbose: messages and progress; Keras' `fit` verbosity.
        started: `time.perf_counter()` when the command started.
        histories: the finished stages' histories, in order (`restore_stages` on a resumed run).
        best_weights: the weights of the best stage so far, `None` before the first one ends.
        val_features: the pooled validation features, once a stage on the frozen backbone has
            computed them.
    """

    model: keras.Model
    spec: BackboneSpec
    options: TrainOptions
    folder: ImageFolder
    data: RunData
    files: artifacts.Run
    out_dir: Path
    record: dict
    strategy: tf.distribute.Strategy
    reporter: Reporter
    verbose: int | str
    started: float
    histories: list[pd.DataFrame]
    best_weights: list[np.ndarray] | None
    val_features: np.ndarray | None = None

    @property
    def stages_done(self) -> dict[str, float]:
        """Finished stages and their seconds, in order."""
        return stages_done(self.record)

    @property
    def epoch(self) -> int:
        return sum(len(history) for history in self.histories)

    @property
    def best_loss(self) -> float:
        return self.record.get("best_loss", float("inf"))

    @property
    def best_stage(self) -> str | None:
        return self.record.get("best_stage")

    def end_stage(self, stage: str, stage_loss: float, seconds: float) -> None:
        """Records the stage named `stage` as finished; its weights stay if they beat the best loss,
        else the best return."""
        from transfer.training.callbacks import save_weights

        self.histories.append(self.files.stage_history(stage))
        if self.best_weights is None or stage_loss < self.best_loss:
            self.best_weights = self.model.get_weights()
            save_weights(self.files.best_weights_file, self.best_weights)
            self.record.update(best_loss=float(stage_loss), best_stage=stage)
        else:
            self.reporter.message(
                f"Stage {stage} did not beat the best epoch so far (by validation accuracy, or mAP for multi-label, ties broken by loss: "
                f"val_selection {self.best_loss:.4f}, lower is better); keeping "
                f"the weights of stage {self.best_stage}."
            )
            self.model.set_weights(self.best_weights)
        self.record["stages_done"].append({"stage": stage, "seconds": round(seconds, 2)})
        publishing.write_json(self.files.resume_file, self.record)


def stages_done(record: dict) -> dict[str, float]:
    """The finished stages of a run's `resume.json` record and their seconds, in order."""
    return {entry["stage"]: entry["seconds"] for entry in record["stages_done"]}


def frozen_features(run: RunState) -> str | None:
    """How the frozen stage gets backbone features (`TrainOptions.frozen_features`), as it can
    under the run's strategy; `None` for a baseline, which has no frozen stage."""
    from transfer.training.distribute import is_multi_worker

    if not run.options.transfers:
        return None
    chosen = run.options.frozen_features
    if chosen != "in_loop" and is_multi_worker(run.strategy):
        return "in_loop"  # each worker would cache only its own shard
    return chosen


def run_data(folder: ImageFolder, options: TrainOptions, strategy: tf.distribute.Strategy) -> RunData:
    """The run's splits as datasets of `options.batch_size` images per replica of `strategy`."""
    from transfer.data.folders import make_dataset

    global_batch = options.batch_size * strategy.num_replicas_in_sync
    train_paths, train_labels = folder.paths_and_indices("train")
    val_paths, val_labels = folder.paths_and_indices("val")
    return RunData(
        global_batch=global_batch,
        class_weight=folder.class_weights() if options.class_weight == "auto" else None,
        train_paths=train_paths, train_labels=train_labels, val_paths=val_paths, val_labels=val_labels,
        train_data=make_dataset(train_paths, train_labels, options.image_size, global_batch, shuffle=True, seed=options.seed),
        val_data=make_dataset(val_paths, val_labels, options.image_size, global_batch, shuffle=False),
    )


def restore_stages(files: artifacts.Run, record: dict, model: keras.Model) -> tuple[list[pd.DataFrame], list[np.ndarray] | None]:
    """`(histories, best_weights)` of the stages an interrupted run finished (none on a new run);
    the best weights are loaded into `model`."""
    from transfer.training.callbacks import load_weights

    done = stages_done(record)
    if not done:
        return [], None
    best_weights = load_weights(files.best_weights_file)
    model.set_weights(best_weights)
    return [files.stage_history(stage) for stage in done], best_weights


def build_model(
    spec: BackboneSpec, options: TrainOptions, num_classes: int, strategy: tf.distribute.Strategy, reporter: Reporter
) -> keras.Model:
    """The classifier, seeded, in the strategy's scope, with the options' precision policy."""
    import keras

    from transfer.data.augmentation import build_augmentation
    from transfer.models.classifier import build_classifier, freeze_backbone, unfreeze_top
    from transfer.models.heads import HeadSpec
    from transfer.models.saving import load_run_model
    from transfer.training.distribute import describe

    keras.utils.set_random_seed(options.seed)
    reporter.message(f"Strategy: {describe(strategy)}")
    previous_policy = keras.config.dtype_policy()
    if options.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")  # layers take the policy when built
    source = load_run_model(artifacts.Run.open(options.source_run)) if options.source_run else None
    if source is not None:
        reporter.message(f"Backbone: the {spec.name} of {options.source_run}, under a new head for {num_classes} classes.")
    try:
        with strategy.scope():
            model = build_classifier(
                spec,
                num_classes=num_classes,
                image_size=options.image_size,
                weights=source if source is not None else None if options.weights == "none" else options.weights,
                head=HeadSpec(options.dropout, options.head_units, options.multi_label),
                augmentation=build_augmentation(options.flip, options.seed, spec.augmentations) if options.augment else None,
                backbone_layer=options.backbone_layer,
                pooling=options.pooling,
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if options.transfers and options.finetune_epochs:
        unfreeze_top(model, spec, options.unfreeze_count)  # validates --unfreeze before heavy work
        freeze_backbone(model, spec)
    return model
