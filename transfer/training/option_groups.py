"""The four groups of `TrainOptions`, each holding the options of one concern and checking them:
what the network is (`ModelOptions`), which images (`DataOptions`), how it is trained
(`RecipeOptions`), where it runs (`RuntimeOptions`). Each group is made from the declarations in
`transfer.training.option_fields` (its fields are those whose metadata names the group: none is
listed twice) and given its `check` here. `TrainOptions.resolved()` (`transfer.training.options`)
fills the defaults, then calls these and the few rules that span groups (`check_combinations`,
beside `TrainOptions`). Imports neither TensorFlow nor Keras, nor `transfer.training.options`.
"""

from __future__ import annotations

import dataclasses
import math

from transfer.models.registry import BackboneSpec, check_weights
from transfer.core.choices import MAX_BATCH_SIZE, MAX_IMAGE_SIZE
from transfer.training.distribute import cluster_task
from transfer.core.errors import InvalidOptionError, require
from transfer.models.external import HUB_PREFIX
from transfer.training.option_fields import FIELDS, flag, group_fields, option_flag


def _require(condition: bool, name: str, received, allowed: str) -> None:
    """`require` for option `name`, spelled as the command line does."""
    require(condition, option_flag(name), received, allowed)


def _require_choice(name: str, received) -> None:
    """Refuses a value of option `name` outside its declared choices."""
    choices = FIELDS[name].metadata["choices"]
    _require(received in choices, name, received, " | ".join(choices))


def _check_model(self, spec: BackboneSpec, source: str | None, given_head: str | None) -> None:
    _require(self.candidates is None, "candidates", self.candidates, f"given only with {flag.backbone} auto (the backbones it probes)")
    if spec.max_input_size is not None and source is None:
        _require(self.image_size == spec.max_input_size, "image_size", self.image_size,
                 f"{spec.max_input_size}, the input size saved in {spec.source} (omit {flag.image_size})")
    _require(spec.min_input_size <= self.image_size <= MAX_IMAGE_SIZE, "image_size", self.image_size,
             f"between {spec.min_input_size} and {MAX_IMAGE_SIZE} for {spec.label}")
    if self.backbone_layer is not None and (spec.source is None or spec.source.startswith(HUB_PREFIX) or source):
        raise InvalidOptionError(
            f"{flag.backbone_layer} {self.backbone_layer} chooses the features of a model file given as {flag.backbone} PATH.keras; "
            f"{spec.label} is not one. Drop {flag.backbone_layer}."
        )
    _require_choice("pooling", self.pooling)
    if self.pooling != "auto" and (spec.source is None or source):
        raise InvalidOptionError(
            f"{flag.pooling} {self.pooling} pools the tokens of a keras-hub backbone (ViT, DINOv2, SigLIP) or a model file "
            f"that returns tokens; {spec.label} returns a feature map. Drop {flag.pooling}."
        )
    if source is None:
        check_weights(spec, self.weights)
    if given_head is not None:
        _require_choice("head", given_head)
    _require(0 <= self.dropout < 1, "dropout", self.dropout, "a rate in [0, 1)")
    _require(self.head_units >= 0, "head_units", self.head_units, "an integer >= 0 (0: no hidden layer)")
    _require(self.head != "logistic" or self.head_units == 0, "head_units", self.head_units,
             f"0 with {flag.head} logistic (a logistic regression is the softmax layer alone)")


def _check_data(self) -> None:
    _require(0 < self.val_split < 1, "val_split", self.val_split, "a fraction between 0 and 1")
    _require_choice("class_weight", self.class_weight)
    if self.manifest and self.val_dir:
        raise InvalidOptionError(
            f"Received {flag.manifest} {self.manifest} and {flag.val_dir} {self.val_dir}; a manifest gives the "
            f"validation images in its split column instead."
        )
    _require_choice("flip", self.flip)
    if self.multi_label and not self.manifest:
        raise InvalidOptionError(
            f"{flag.multi_label} reads a manifest with a labels column (path,labels[,split]; labels separated by ;): "
            f"pass {flag.manifest} FILE.csv. Class folders give one label per image."
        )
    if self.multi_label and self.class_weight == "auto":
        raise InvalidOptionError(
            f"{flag.class_weight} auto balances the classes of single-label data; with {flag.multi_label} each label is its own "
            f"yes/no, which it does not weigh. Drop {flag.class_weight} auto."
        )


def _check_recipe(self) -> None:
    _require(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
    _require(self.finetune_epochs >= 0, "finetune_epochs", self.finetune_epochs, "an integer >= 0")
    for name in ("lr", "finetune_lr"):
        _require(0 < getattr(self, name) < math.inf, name, getattr(self, name), "a finite number > 0")
    _require(self.batch_size is None or 1 <= self.batch_size <= MAX_BATCH_SIZE, "batch_size", self.batch_size,
             f"an integer between 1 and {MAX_BATCH_SIZE}")
    _require(self.patience is None or self.patience >= 1, "patience", self.patience, "an integer >= 1")
    _require_choice("optimizer", self.optimizer)
    _require(self.unfreeze == "all" or (self.unfreeze.isdecimal() and int(self.unfreeze) >= 1),
             "unfreeze", self.unfreeze, "'all' or a number of top backbone layers >= 1")
    for name in ("schedule", "finetune_schedule"):
        _require_choice(name, getattr(self, name))
    _require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "a fraction in [0, 1)")
    for name in ("mixup", "cutmix"):
        _require(0 <= getattr(self, name) <= 10, name, getattr(self, name),
                 "a Beta(a, a) parameter between 0 (off) and 10 (MixUp: 0.2 to 0.4 is usual; CutMix: 1)")
    _require_choice("calibrate", self.calibrate)
    _require_choice("unknown", self.unknown)
    _require(0 < self.unknown_share < 0.5, "unknown_share", self.unknown_share, "a fraction above 0 and below 0.5, such as 0.02")


def _check_runtime(self) -> None:
    _require(0 <= self.seed < 2**32, "seed", self.seed, "an integer between 0 and 2**32 - 1")
    _require_choice("strategy", self.strategy)
    if self.strategy == "multiworker" and cluster_task() is None:
        raise InvalidOptionError(
            f"{flag.strategy} multiworker needs the cluster in the TF_CONFIG environment variable, and "
            "TF_CONFIG is not set. See the README's \"Several machines\" section."
        )
    _require(self.cached_views >= 0, "cached_views", self.cached_views, "an integer >= 0")


def _group(name: str, group: str, doc: str, check) -> type:
    """The frozen dataclass of the options whose metadata names `group`, with `check`."""
    fields = [(field.name, field.type) for field in group_fields(group)]
    return dataclasses.make_dataclass(name, fields, frozen=True, namespace={"__doc__": doc, "__module__": __name__, "check": check})


ModelOptions = _group("ModelOptions", "model", "What the network is: the backbone and its weights, the input size, the head.", _check_model)
DataOptions = _group("DataOptions", "data", "Which images, and how they are split, weighted and augmented.", _check_data)
RecipeOptions = _group(
    "RecipeOptions", "recipe", "How it is trained: the stages' epochs, rates, schedules and optimizer, early stopping, the "
    "batch, and the regularization of the loss and the batches.", _check_recipe)
RuntimeOptions = _group("RuntimeOptions", "runtime", "Where and how it runs: the seed, the `tf.distribute` strategy, the feature cache, the logs.",
                        _check_runtime)
