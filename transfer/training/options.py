"""Every choice of a training run (`TrainOptions`), its defaults and its checks, resolved in one place.

The values each option may take are in `transfer.core.choices`. This module imports neither TensorFlow
nor Keras, so the command line answers `--help` and a mistake at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from transfer.models.registry import BackboneSpec, get_backbone, run_backbone
from transfer.core.choices import (
    DEFAULT_BACKBONE, DEFAULT_EPOCHS, DEFAULT_SCHEDULES, FINETUNE_LEARNING_RATE, HEAD_LEARNING_RATE, HEAD_OPTIMIZER,
)
from transfer.training.distribute import cluster_task
from transfer.core.errors import InvalidOptionError
from transfer.models.external import HUB_PREFIX, is_external
from transfer.training.option_fields import TrainFields, flag, option_flag
from transfer.training.option_groups import DataOptions, ModelOptions, RecipeOptions, RuntimeOptions


@dataclass(frozen=True)
class TrainOptions(TrainFields):
    """Every choice of a training run, flat as the command line gives them, in four groups: what the
    network is (`ModelOptions`), which images (`DataOptions`), how it is trained (`RecipeOptions`)
    and where it runs (`RuntimeOptions`). The fields, each with its default, group and help, are
    declared once in `TrainFields` (`transfer.training.option_fields`). `None` is "the default", which
    may depend on other options; `resolved()` fills it in and checks everything, once.
    """

    def resolved(self) -> TrainOptions:
        """Validates every value and returns the options with all defaults filled in: the one place
        where options are resolved. Defaults that depend on other options are filled first (the
        backbone's own, a `--weights RUN_DIR` run's); then each group checks itself, and
        `check_combinations` the few rules that span groups.

        Raises:
            InvalidOptionError: naming the option, the value received and what is allowed.
        """
        source = self.source_run
        backbone, image_size = self.backbone, self.image_size
        if source is not None:
            backbone, image_size = _from_source_run(source, backbone, image_size)
            if self.preprocess is not None:
                raise InvalidOptionError(f"{flag.preprocess}: the run in {flag.weights} {source} brings its own preprocessing. Drop {flag.preprocess}.")
        spec = dataclasses.replace(self, backbone=backbone).backbone_spec()
        scratch = not (spec.pretrained or source)
        lr = self.lr if self.lr is not None else (spec.learning_rate if scratch else HEAD_LEARNING_RATE)
        resolved = dataclasses.replace(
            self,
            backbone=spec.source or spec.name,
            # a run given as weights is recorded by its full path: where the backbone came from
            weights=str(Path(source).resolve()) if source else self.weights or spec.source or ("imagenet" if spec.pretrained else "none"),
            image_size=spec.input_size if image_size is None else image_size,  # 0 is refused, not the default
            head=self.head or self.default_head(scratch),
            epochs=DEFAULT_EPOCHS if self.epochs is None else self.epochs,
            lr=lr,
            finetune_lr=self.finetune_lr if self.finetune_lr is not None else (lr if source and not spec.pretrained else FINETUNE_LEARNING_RATE),
            optimizer=self.optimizer or (spec.optimizer if scratch else HEAD_OPTIMIZER),
            schedule=self.schedule or DEFAULT_SCHEDULES["scratch" if scratch else "frozen"],
            finetune_schedule=self.finetune_schedule or DEFAULT_SCHEDULES["finetune"],
        )
        resolved.model_options.check(spec, source, given_head=self.head)
        resolved.data_options.check()
        resolved.recipe_options.check()
        resolved.runtime_options.check()
        check_combinations(self, resolved, spec, scratch)
        return resolved

    @property
    def refits(self) -> bool:
        """Whether the head is fitted again on train + validation after a cross-validated estimate
        (`--refit`, the default): a single-label logistic head without fine-tuning."""
        return self.refit and self.head == "logistic" and not self.finetune_epochs and not self.multi_label

    @property
    def model_options(self) -> ModelOptions:
        return group_of(self, ModelOptions)

    @property
    def data_options(self) -> DataOptions:
        return group_of(self, DataOptions)

    @property
    def recipe_options(self) -> RecipeOptions:
        return group_of(self, RecipeOptions)

    @property
    def runtime_options(self) -> RuntimeOptions:
        return group_of(self, RuntimeOptions)

    @property
    def source_run(self) -> str | None:
        """The run directory given as `weights`, whose backbone this run reuses."""
        return self.weights if self.weights and Path(self.weights).is_dir() else None

    def for_backbone(self, name: str, manifest: Path | str) -> TrainOptions:
        """These options for backbone `name` of a comparison or cross-validation, reading its images
        from `manifest`: a baseline from scratch trains in one stage with no weights, and the options
        of a model file (`preprocess`, `backbone_layer`) go to model files only."""
        spec = get_backbone(name)
        transfers = spec.pretrained or self.source_run is not None
        is_file = spec.source is not None and not spec.source.startswith(HUB_PREFIX)
        return dataclasses.replace(
            self, backbone=name, manifest=str(manifest), val_dir=None,
            weights=self.weights if transfers and spec.source is None else None,
            finetune_epochs=self.finetune_epochs if transfers else 0,  # a baseline from scratch: one stage
            unfreeze=self.unfreeze if transfers else "all",
            finetune_lr=self.finetune_lr if transfers else None,
            finetune_schedule=self.finetune_schedule if transfers else None,
            preprocess=self.preprocess if is_file else None, backbone_layer=self.backbone_layer if is_file else None,
            pooling=self.pooling if spec.source is not None else "auto",
        )

    def backbone_spec(self) -> BackboneSpec:
        """The backbone's registry entry, or the description of its model file or keras-hub preset
        (that of a `--weights RUN_DIR` run is read from the run: the file is not needed again).

        Raises:
            InvalidOptionError: see `transfer.models.registry.get_backbone`.
        """
        name = self.backbone or DEFAULT_BACKBONE
        if self.source_run is not None and is_external(name):
            from transfer.outputs.artifacts import Run

            return run_backbone(Run.open(self.source_run).config())
        return get_backbone(name, self.preprocess)

    @property
    def transfers(self) -> bool:
        """Whether the model is a backbone (pretrained, from a file or preset, or from a run) under a
        new head, trained in the frozen stage and then fine-tuned; else a baseline trained from
        scratch in one stage."""
        name = self.backbone or DEFAULT_BACKBONE
        return is_external(name) or get_backbone(name).pretrained or self.source_run is not None

    @property
    def finetune_options_given(self) -> list[str]:
        """The options of stage 2 (fine-tuning) given a value other than their default, as the command line spells them."""
        given = {"unfreeze": self.unfreeze != "all", "finetune_lr": self.finetune_lr is not None,
                 "finetune_schedule": self.finetune_schedule is not None}
        return [option_flag(name) for name, was_given in given.items() if was_given]

    @property
    def mixing(self) -> bool:
        """Whether training batches are mixed (MixUp, CutMix)."""
        return bool(self.mixup or self.cutmix)

    @property
    def frozen_features(self) -> str:
        """How the frozen stage gets backbone features: `cached` (one unaugmented view per image),
        `cached_views` (K augmented views) or `in_loop` (the backbone on every image every epoch,
        augmented; also with mixing, which mixes images: mixing pooled features would be another
        method)."""
        if not self.cache_features or self.mixing or (self.augment and self.cached_views == 0):
            return "in_loop"
        return "cached_views" if self.augment and self.cached_views > 1 else "cached"

    def head_note(self, resolved: TrainOptions) -> str | None:
        """What to tell the user when options given for gradient descent made the head dense, not
        the default logistic regression (`default_head`); `None` otherwise."""
        if self.head is not None or resolved.head != "dense" or not resolved.transfers:
            return None
        given = [name for name, value in (
            (flag.epochs, self.epochs), (flag.lr, self.lr), (flag.schedule, self.schedule), (flag.head_units, self.head_units),
            (flag.label_smoothing, self.label_smoothing), (f"{flag.mixup}/{flag.cutmix}", self.mixing),
            (flag.cached_views, self.cached_views != 1), (option_flag("cache_features", negated=True), not self.cache_features),
            (flag.tensorboard, self.tensorboard and not self.finetune_epochs),
        ) if value]
        why = f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'}" if given else "multi-worker training needs"
        return (f"Head: dense, trained by gradient descent, instead of the default logistic regression: {why} it. "
                f"Pass {flag.head} dense to say so, or drop {'those options' if len(given) > 1 else 'it'} for the logistic head.")

    def default_head(self, scratch: bool) -> str:
        """The head when `--head` is not given: `logistic`, unless the frozen stage must train by
        gradient descent for another option to mean something (its epochs, mixing, label smoothing,
        hidden units, augmented or in-loop features, a learning rate or schedule for the frozen stage, its
        TensorBoard curves, or multi-worker training, where each worker holds only a shard of the
        features); a baseline from scratch brings its own classifier (`dense`)."""
        wants_gradient_descent = (
            scratch or self.epochs is not None or self.mixing or self.label_smoothing or self.head_units or self.cached_views != 1
            or not self.cache_features or self.lr is not None
            or self.strategy == "multiworker" or (self.strategy == "auto" and cluster_task() is not None)
            or self.schedule is not None or (self.tensorboard and not self.finetune_epochs)
        )
        return "dense" if wants_gradient_descent else "logistic"

    def stage_patience(self, epochs: int) -> int:
        """Epochs without a better validation score before a stage of `epochs` stops."""
        return self.patience or max(5, epochs // 3)

    @property
    def unfreeze_count(self) -> int | None:
        return None if self.unfreeze == "all" else int(self.unfreeze)


def _from_source_run(source: str, backbone: str | None, image_size: int | None) -> tuple[str, int]:
    """The backbone and image size of the run at `source`, which this run's must not contradict."""
    from transfer.outputs.artifacts import Run

    config = Run.open(source).config()
    if "backbone" not in config or "image_size" not in config:
        raise InvalidOptionError(f"{flag.weights} {source}: a run directory needs its config.json (written by `transfer train`).")
    if backbone and backbone != config["backbone"]:
        raise InvalidOptionError(
            f"{flag.backbone} {backbone} differs from the backbone of the run in {flag.weights} {source} "
            f"({config['backbone']}); omit {flag.backbone}, the run's is used."
        )
    if image_size is not None and image_size != config["image_size"]:
        raise InvalidOptionError(
            f"{flag.image_size} {image_size} differs from the run in {flag.weights} {source} ({config['image_size']}); "
            f"omit {flag.image_size}, the run's is used."
        )
    return config["backbone"], config["image_size"]


def group_of(options: TrainOptions, group: type):
    """The fields of `options` that make up `group`."""
    return group(**{field.name: getattr(options, field.name) for field in dataclasses.fields(group)})


def check_combinations(given: TrainOptions, options: TrainOptions, spec: BackboneSpec, scratch: bool) -> None:
    """The rules that span groups: caching augmented views, mixing, the logistic head, one stage for
    a baseline. `given` are the options as received, `options` resolved."""
    if options.cached_views > 1 and not (options.augment and options.cache_features):
        raise InvalidOptionError(
            f"{flag.cached_views} {options.cached_views} caches augmented views, so it needs {flag.augment} and "
            f"{flag.cache_features}. Without augmentation every epoch sees the same image and one "
            f"cached view is exact."
        )
    if options.mixing and options.cached_views > 1:
        raise InvalidOptionError(
            f"{flag.cached_views} {options.cached_views} caches backbone features of single images, and {flag.mixup}/{flag.cutmix} mix "
            f"images, so they cannot be combined: drop {flag.cached_views} (a frozen backbone then runs on the mixed images)."
        )
    if options.head == "logistic":
        unused = [flag_ for flag_, value in ((flag.label_smoothing, given.label_smoothing), (flag.schedule, given.schedule),
                                             (flag.tensorboard, given.tensorboard)) if value]
        if not options.finetune_epochs and unused:
            raise InvalidOptionError(
                f"{flag.head} logistic without {flag.finetune_epochs} fits the head in closed form and trains nothing by gradient "
                f"descent, so {', '.join(unused)} would have no effect; drop {'it' if len(unused) == 1 else 'them'}, or add "
                f"{flag.finetune_epochs} N."
            )
        if options.mixing:
            raise InvalidOptionError(f"{flag.head} logistic fits unmixed features in closed form; drop {flag.mixup}/{flag.cutmix}, or use {flag.head} dense.")
        if scratch:
            raise InvalidOptionError(
                f"{flag.head} logistic fits a linear classifier on a backbone's features; {spec.name} is trained from "
                f"scratch. Use a pretrained backbone, or {flag.weights} RUN_DIR to reuse a run's layers."
            )
    if scratch and options.finetune_epochs:
        raise InvalidOptionError(
            f"{spec.name} is trained from scratch in one stage; received {flag.finetune_epochs} "
            f"{options.finetune_epochs}. Use {flag.epochs} for baselines (or {flag.weights} RUN_DIR to reuse a run's layers)."
        )
    stage_two = given.finetune_options_given
    if stage_two and not options.finetune_epochs:
        them = "it" if len(stage_two) == 1 else "them"
        raise InvalidOptionError(
            f"{spec.name} is trained from scratch in one stage; received {', '.join(stage_two)}, which set the fine-tuning "
            f"stage. Drop {them} (or {flag.weights} RUN_DIR to reuse a run's layers)." if scratch else
            f"Received {', '.join(stage_two)}, which set stage 2 (fine-tuning), but no {flag.finetune_epochs}: stage 2 would not "
            f"run. Add {flag.finetune_epochs} N, or drop {them}."
        )
