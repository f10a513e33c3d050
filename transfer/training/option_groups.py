"""The four groups of `TrainOptions`, each holding the options of one concern and checking them:
what the network is (`ModelOptions`), which images (`DataOptions`), how it is trained
(`RecipeOptions`), where it runs (`RuntimeOptions`). `TrainOptions.resolved()` (`transfer.training.options`)
fills the defaults, then calls these and the few rules that span groups (`check_combinations`,
beside `TrainOptions`). Imports neither TensorFlow nor Keras, nor `transfer.training.options`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transfer.models.registry import BackboneSpec, check_weights
from transfer.core.choices import CALIBRATIONS, CLASS_WEIGHTS, FLIPS, HEADS, MAX_BATCH_SIZE, MAX_IMAGE_SIZE, OPTIMIZERS, SCHEDULES
from transfer.training.distribute import STRATEGIES, cluster_task
from transfer.core.errors import InvalidOptionError, require
from transfer.models.external import HUB_PREFIX



@dataclass(frozen=True)
class ModelOptions:
    """What the network is: the backbone and its weights, the input size, the head."""

    backbone: str
    candidates: str | None
    preprocess: str | None
    backbone_layer: str | None
    weights: str
    image_size: int
    head: str
    head_units: int
    dropout: float
    mixed_precision: bool

    def check(self, spec: BackboneSpec, source: str | None, given_head: str | None) -> None:
        require(self.candidates is None, "--backbones", self.candidates, "given only with --backbone auto (the backbones it probes)")
        if spec.max_input_size is not None and source is None:
            require(self.image_size == spec.max_input_size, "--image-size", self.image_size,
                    f"{spec.max_input_size}, the input size saved in {spec.source} (omit --image-size)")
        require(
            spec.min_input_size <= self.image_size <= MAX_IMAGE_SIZE, "--image-size", self.image_size,
            f"between {spec.min_input_size} and {MAX_IMAGE_SIZE} for {spec.label}",
        )
        if self.backbone_layer is not None and (spec.source is None or spec.source.startswith(HUB_PREFIX) or source):
            raise InvalidOptionError(
                f"--backbone-layer {self.backbone_layer} chooses the features of a model file given as --backbone PATH.keras; "
                f"{spec.label} is not one. Drop --backbone-layer."
            )
        if source is None:
            check_weights(spec, self.weights)
        require(given_head is None or given_head in HEADS, "--head", given_head, " | ".join(HEADS))
        require(0 <= self.dropout < 1, "--dropout", self.dropout, "a rate in [0, 1)")
        require(self.head_units >= 0, "--head-units", self.head_units, "an integer >= 0 (0: no hidden layer)")
        require(self.head != "logistic" or self.head_units == 0, "--head-units", self.head_units,
                "0 with --head logistic (a logistic regression is the softmax layer alone)")


@dataclass(frozen=True)
class DataOptions:
    """Which images, and how they are split, weighted and augmented."""

    val_split: float
    val_dir: str | None
    manifest: str | None
    multi_label: bool
    dedupe: bool
    allow_split_names: bool
    class_weight: str
    augment: bool
    flip: str

    def check(self) -> None:
        require(0 < self.val_split < 1, "--val-split", self.val_split, "a fraction between 0 and 1")
        require(self.class_weight in CLASS_WEIGHTS, "--class-weight", self.class_weight, " | ".join(CLASS_WEIGHTS))
        if self.manifest and self.val_dir:
            raise InvalidOptionError(
                f"Received --manifest {self.manifest} and --val-dir {self.val_dir}; a manifest gives the "
                f"validation images in its split column instead."
            )
        require(self.flip in FLIPS, "--flip", self.flip, " | ".join(FLIPS))
        if self.multi_label and not self.manifest:
            raise InvalidOptionError(
                "--multi-label reads a manifest with a labels column (path,labels[,split]; labels separated by ;): "
                "pass --manifest FILE.csv. Class folders give one label per image."
            )
        if self.multi_label and self.class_weight == "auto":
            raise InvalidOptionError(
                "--class-weight auto balances the classes of single-label data; with --multi-label each label is its own "
                "yes/no, which it does not weigh. Drop --class-weight auto."
            )


@dataclass(frozen=True)
class RecipeOptions:
    """How it is trained: the stages' epochs, rates, schedules and optimizer, early stopping, the
    batch, and the regularization of the loss and the batches."""

    epochs: int
    finetune_epochs: int
    unfreeze: str
    lr: float
    finetune_lr: float
    optimizer: str
    schedule: str
    finetune_schedule: str
    patience: int | None
    batch_size: int | None
    label_smoothing: float
    mixup: float
    cutmix: float
    calibrate: str

    def check(self) -> None:
        require(self.epochs >= 1, "--epochs", self.epochs, "an integer >= 1")
        require(self.finetune_epochs >= 0, "--finetune-epochs", self.finetune_epochs, "an integer >= 0")
        require(0 < self.lr < math.inf, "--lr", self.lr, "a finite number > 0")
        require(0 < self.finetune_lr < math.inf, "--finetune-lr", self.finetune_lr, "a finite number > 0")
        require(self.batch_size is None or 1 <= self.batch_size <= MAX_BATCH_SIZE, "--batch-size", self.batch_size,
                f"an integer between 1 and {MAX_BATCH_SIZE}")
        require(self.patience is None or self.patience >= 1, "--patience", self.patience, "an integer >= 1")
        require(self.optimizer in OPTIMIZERS, "--optimizer", self.optimizer, " | ".join(OPTIMIZERS))
        require(
            self.unfreeze == "all" or (self.unfreeze.isdecimal() and int(self.unfreeze) >= 1),
            "--unfreeze", self.unfreeze, "'all' or a number of top backbone layers >= 1",
        )
        for option, value in (("--schedule", self.schedule), ("--finetune-schedule", self.finetune_schedule)):
            require(value in SCHEDULES, option, value, " | ".join(SCHEDULES))
        require(0 <= self.label_smoothing < 1, "--label-smoothing", self.label_smoothing, "a fraction in [0, 1)")
        for option, value in (("--mixup", self.mixup), ("--cutmix", self.cutmix)):
            require(0 <= value <= 10, option, value, "a Beta(a, a) parameter between 0 (off) and 10 (MixUp: 0.2 to 0.4 is usual; CutMix: 1)")
        require(self.calibrate in CALIBRATIONS, "--calibrate", self.calibrate, " | ".join(CALIBRATIONS))


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how it runs: the seed, the `tf.distribute` strategy, the feature cache, the logs."""

    seed: int
    strategy: str
    cache_features: bool
    cached_views: int
    cache_dir: str | None
    tensorboard: bool

    def check(self) -> None:
        require(0 <= self.seed < 2**32, "--seed", self.seed, "an integer between 0 and 2**32 - 1")
        require(self.strategy in STRATEGIES, "--strategy", self.strategy, " | ".join(STRATEGIES))
        if self.strategy == "multiworker" and cluster_task() is None:
            raise InvalidOptionError(
                "--strategy multiworker needs the cluster in the TF_CONFIG environment variable, and "
                "TF_CONFIG is not set. See the README's \"Several machines\" section."
            )
        require(self.cached_views >= 0, "--cached-views", self.cached_views, "an integer >= 0")
