"""Every choice of a training run, the values each may take, and their validation.

The choice lists here (`OPTIMIZERS`, `FLIPS`, `STRATEGIES`, `CLASS_WEIGHTS`) are the ones the command
line offers, as `--backbone` comes from the registry. This module imports neither TensorFlow nor
Keras, so the command line answers `--help` at once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from transfer.backbones import BackboneSpec, check_weights, get_backbone, run_backbone
from transfer.external_backbones import HUB_PREFIX, is_external
from transfer.distribute import STRATEGIES, cluster_task
from transfer.errors import InvalidOptionError, require

#: `adam`, `sgd` (Nesterov momentum 0.9) or `rmsprop` (see `transfer.stages.make_optimizer`).
OPTIMIZERS = ("adam", "sgd", "rmsprop")
#: The first stage's defaults for a new head on transferred features (the Keras transfer-learning guide's).
HEAD_OPTIMIZER, HEAD_LEARNING_RATE = "adam", 1e-3
#: The fine-tuning stage's default for a pretrained backbone: the Keras guide's 1e-5, measured on real
#: pretrained features (README, "The recipe on real pretrained features": LP-FT at 1e-5 stayed at or
#: above the scikit-learn floor at every size, fine-tuning at 1e-4 fell below it).
FINETUNE_LEARNING_RATE = 1e-5
#: Which random flips augmentation uses; `none` for digits or text, whose mirror image is another.
FLIPS = ("horizontal", "vertical", "horizontal_and_vertical", "none")
#: `auto` weights the loss by scikit-learn's balanced class weights.
CLASS_WEIGHTS = ("none", "auto")
#: The new head: a dense softmax layer trained by gradient descent, or scikit-learn's multinomial
#: logistic regression fitted on the pooled features (the same layer, fitted in closed form).
HEADS = ("dense", "logistic")
#: Learning rate over a stage's steps (see `transfer.schedules`): `constant`; `cosine` decay to 1% of
#: the rate; `onecycle`, fastai's one cycle (a quarter of the steps warming up from rate / 25).
SCHEDULES = ("constant", "cosine", "onecycle")
#: Each stage's default schedule, chosen from measurements (README, "The small-data recipe"): a
#: constant rate trained the new head and the baselines from scratch to clearly better accuracy
#: than cosine decay or one cycle in this tool's short stages; fine-tuning showed no clear winner
#: and keeps cosine.
DEFAULT_SCHEDULES = {"frozen": "constant", "finetune": "cosine", "scratch": "constant"}
#: `transfer export --format`, and LiteRT's `--quantize` (see `transfer.export`).
EXPORT_FORMATS = ("savedmodel", "litert", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
#: The largest input side: 4.5x what the ImageNet backbones were trained at; a batch of 32 at this
#: size already needs about 400 MB for the pixels alone.
MAX_IMAGE_SIZE = 1024
DEFAULT_BACKBONE = "resnet50"
#: Stage 1's epochs when `--epochs` is not given.
DEFAULT_EPOCHS = 10
#: Images per step per replica at most (beyond, a batch of the smallest images no longer fits in memory).
MAX_BATCH_SIZE = 65536


@dataclass(frozen=True)
class TrainOptions:
    """Every choice of a training run. `resolved()` fills the defaults that depend on others.

    Attributes:
        backbone: registry name (`transfer.backbones.BACKBONES`), the path of a Keras model file or
            `keras-hub:PRESET` (`transfer.external_backbones`); `None` means `resnet50`, or the
            backbone of the `weights` run.
        preprocess: for a model file, `none` (it preprocesses raw [0, 255] RGB itself, the default)
            or a `keras.applications` mode (`transfer.backbones.FILE_PREPROCESSING`).
        backbone_layer: for a model file, the layer whose output are the features; `None` for its
            output, below a final softmax classifier and global average pooling.
        weights: `"imagenet"`, `"none"`, a weights file path, or a run directory written by
            `transfer train` whose backbone is reused (for a baseline, its convolutional layers);
            `None` means `"imagenet"` for pretrained backbones and `"none"` for baselines.
        image_size: square input side; `None` means the backbone's default (the run's, with a run
            as `weights`).
        epochs: stage 1 epochs (frozen backbone, or the whole baseline); `None` means 10. Given for
            a transferred backbone, it asks for the dense head (the logistic head has no epochs).
        finetune_epochs: stage 2 epochs; 0 trains the frozen stage only.
        unfreeze: `"all"` or the number of top backbone layers to unfreeze in stage 2.
        lr: stage 1 learning rate; `None` means 1e-3 for a new head (`HEAD_LEARNING_RATE`), the
            backbone's own (`BackboneSpec.learning_rate`) for a baseline trained from scratch.
        finetune_lr: stage 2 learning rate; `None` means `FINETUNE_LEARNING_RATE` (1e-5) for a
            pretrained backbone (the registry's, a model file or preset, or a run of one), or `lr` itself for a baseline's
            layers reused from a run (`--weights RUN_DIR` on LeNet-5 or AlexNet): a small network
            trained here on a few thousand images has features that must adapt, and at a tenth of
            the head's rate they barely moved (LeNet-5's C5 kernels by 2.5%; README, "Transfer
            against scratch").
        optimizer: `adam`, `sgd` (momentum 0.9, Nesterov) or `rmsprop`; `None` means `adam` for a
            new head, the backbone's own (`BackboneSpec.optimizer`) for a baseline from scratch.
        batch_size: images per replica per step; `None` for `default_batch_size` of the training split.
        augment: random transforms while training: flip, rotation, zoom, translation and
            contrast; flip and translation for the baselines (`BackboneSpec.augmentations`).
        flip: which flips augmentation uses (`transfer.augmentation.FLIPS`).
        dropout: dropout rate of the head.
        head_units: hidden dense units in the head; 0 for none.
        val_split: share of each class held out when there is no `val_dir`.
        val_dir: a pre-split validation folder with the same classes.
        manifest: a `path,label[,split]` CSV file to read instead of a folder.
        dedupe: remove validation images that are byte-for-byte copies of training images.
        allow_split_names: accept class folders all named like splits (`train`, `val`, `test`...),
            which are refused as the usual mistake of giving the folder above the splits.
        class_weight: `none`, or `auto` for scikit-learn's balanced class weights in the loss.
        seed: seeds the split, initialization, shuffling and augmentation.
        strategy: `tf.distribute` strategy (`transfer.distribute.STRATEGIES`).
        patience: epochs without a better validation score (`transfer.callbacks.selection_score`)
            before a stage stops early; `None` for a third of the stage's epochs, at least 5.
        cache_features: in the frozen stage, run the backbone once per image and train the head
            on its cached features (`transfer.features`), instead of every epoch.
        cached_views: the frozen stage's views of each training image, with augmentation on: 1 (the
            default) caches one unaugmented view, so augmentation starts with the stages where the
            backbone runs anyway (fine-tuning); K > 1 caches K augmented views; 0 runs the backbone
            on freshly augmented images every epoch (in the loop). Measured: no setting was more
            accurate than one unaugmented view, which is the cheapest (README, "The small-data recipe").
        head: `dense`, or `logistic` to fit the frozen stage's softmax layer with scikit-learn's
            logistic regression (regularization chosen by cross-validation) on the pooled features;
            `None` for `logistic`, or `dense` where another option asks for a head trained by
            gradient descent (`default_head`). Chosen on real pretrained features (README, "The
            recipe on real pretrained features"): the logistic head is the scikit-learn floor by
            construction, which the dense head missed on the whole hymenoptera training set.
        cache_dir: where unaugmented features are kept between runs; `None` for
            `~/.cache/transfer/features`.
        schedule: stage 1's learning-rate schedule (`SCHEDULES`); `None` for the stage's default
            (`DEFAULT_SCHEDULES`).
        finetune_schedule: stage 2's; `None` for its default.
        label_smoothing: the targets are `(1 - x)` on the true class plus `x / classes` on every class.
        mixup: MixUp's Beta(a, a) parameter; 0 for none. Training batches only.
        cutmix: CutMix's Beta(a, a) parameter; 0 for none. With both, each batch gets one of the two.
            Mixing is done on images, so a frozen stage with mixing runs the backbone in the loop.
        tensorboard: write Keras TensorBoard logs of every stage under `RUN_DIR/logs`.
        mixed_precision: build the model with the `mixed_float16` policy (float16 compute,
            float32 weights and softmax, loss scaling); pays off on GPUs with tensor cores. XLA
            needs no option: Keras compiles with `jit_compile="auto"`, on when a GPU is present.
    """

    backbone: str | None = None
    preprocess: str | None = None
    backbone_layer: str | None = None
    weights: str | None = None
    image_size: int | None = None
    epochs: int | None = None
    finetune_epochs: int = 0
    unfreeze: str = "all"
    lr: float | None = None
    finetune_lr: float | None = None
    optimizer: str | None = None
    batch_size: int | None = None
    augment: bool = True
    flip: str = "horizontal"
    dropout: float = 0.2
    head_units: int = 0
    val_split: float = 0.2
    val_dir: str | None = None
    manifest: str | None = None
    dedupe: bool = False
    allow_split_names: bool = False
    class_weight: str = "none"
    seed: int = 42
    strategy: str = "auto"
    patience: int | None = None
    cache_features: bool = True
    cached_views: int = 1
    mixed_precision: bool = False
    head: str | None = None
    cache_dir: str | None = None
    schedule: str | None = None
    finetune_schedule: str | None = None
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    tensorboard: bool = False

    def resolved(self) -> TrainOptions:
        """Validates every value and returns the options with all defaults filled in.

        Raises:
            InvalidOptionError: naming the option, the value received and what is allowed.
        """
        backbone, image_size = self.backbone, self.image_size
        source = self.source_run
        if source is not None:
            backbone, image_size = _from_source_run(source, backbone, image_size)
        if source is not None and self.preprocess is not None:
            raise InvalidOptionError(f"--preprocess: the run in --weights {source} brings its own preprocessing. Drop --preprocess.")
        spec = dataclasses.replace(self, backbone=backbone).backbone_spec()
        weights = self.weights or spec.source or ("imagenet" if spec.pretrained else "none")
        if source is not None:
            weights = str(Path(source).resolve())  # recorded in config.json: where the backbone came from
        image_size = image_size or spec.input_size
        scratch = not (spec.pretrained or source)
        lr = self.lr if self.lr is not None else (spec.learning_rate if scratch else HEAD_LEARNING_RATE)
        optimizer = self.optimizer or (spec.optimizer if scratch else HEAD_OPTIMIZER)
        finetune_lr = self.finetune_lr if self.finetune_lr is not None else (lr if source and not spec.pretrained else FINETUNE_LEARNING_RATE)
        epochs = DEFAULT_EPOCHS if self.epochs is None else self.epochs
        require(epochs >= 1, "--epochs", self.epochs, "an integer >= 1")
        require(self.finetune_epochs >= 0, "--finetune-epochs", self.finetune_epochs, "an integer >= 0")
        require(0 < lr < math.inf, "--lr", lr, "a finite number > 0")
        require(0 < finetune_lr < math.inf, "--finetune-lr", finetune_lr, "a finite number > 0")
        require(self.batch_size is None or 1 <= self.batch_size <= MAX_BATCH_SIZE, "--batch-size", self.batch_size, f"an integer between 1 and {MAX_BATCH_SIZE}")
        require(0 <= self.seed < 2**32, "--seed", self.seed, "an integer between 0 and 2**32 - 1")
        require(0 < self.val_split < 1, "--val-split", self.val_split, "a fraction between 0 and 1")
        require(0 <= self.dropout < 1, "--dropout", self.dropout, "a rate in [0, 1)")
        require(self.head_units >= 0, "--head-units", self.head_units, "an integer >= 0 (0: no hidden layer)")
        require(self.patience is None or self.patience >= 1, "--patience", self.patience, "an integer >= 1")
        require(optimizer in OPTIMIZERS, "--optimizer", optimizer, " | ".join(OPTIMIZERS))
        require(self.strategy in STRATEGIES, "--strategy", self.strategy, " | ".join(STRATEGIES))
        require(self.class_weight in CLASS_WEIGHTS, "--class-weight", self.class_weight, " | ".join(CLASS_WEIGHTS))
        if self.manifest and self.val_dir:
            raise InvalidOptionError(
                f"Received --manifest {self.manifest} and --val-dir {self.val_dir}; a manifest gives the "
                f"validation images in its split column instead."
            )
        require(self.flip in FLIPS, "--flip", self.flip, " | ".join(FLIPS))
        if spec.max_input_size is not None and source is None:
            require(image_size == spec.max_input_size, "--image-size", image_size,
                    f"{spec.max_input_size}, the input size saved in {spec.source} (omit --image-size)")
        require(
            spec.min_input_size <= image_size <= MAX_IMAGE_SIZE, "--image-size", image_size,
            f"between {spec.min_input_size} and {MAX_IMAGE_SIZE} for {spec.label}",
        )
        if self.backbone_layer is not None and (spec.source is None or spec.source.startswith(HUB_PREFIX) or source):
            raise InvalidOptionError(
                f"--backbone-layer {self.backbone_layer} chooses the features of a model file given as --backbone PATH.keras; "
                f"{spec.label} is not one. Drop --backbone-layer."
            )
        require(
            self.unfreeze == "all" or (self.unfreeze.isdigit() and int(self.unfreeze) >= 1),
            "--unfreeze", self.unfreeze, "'all' or a number of top backbone layers >= 1",
        )
        if source is None:
            check_weights(spec, weights)
        if self.strategy == "multiworker" and cluster_task() is None:
            raise InvalidOptionError(
                "--strategy multiworker needs the cluster in the TF_CONFIG environment variable, and "
                "TF_CONFIG is not set. See the README's \"Several machines\" section."
            )
        require(self.cached_views >= 0, "--cached-views", self.cached_views, "an integer >= 0")
        if self.cached_views > 1 and not (self.augment and self.cache_features):
            raise InvalidOptionError(
                f"--cached-views {self.cached_views} caches augmented views, so it needs --augment and "
                f"--cache-features. Without augmentation every epoch sees the same image and one "
                f"cached view is exact."
            )
        require(self.head is None or self.head in HEADS, "--head", self.head, " | ".join(HEADS))
        head = self.head or self.default_head(scratch)
        for option, value in (("--schedule", self.schedule), ("--finetune-schedule", self.finetune_schedule)):
            require(value is None or value in SCHEDULES, option, value, " | ".join(SCHEDULES))
        require(0 <= self.label_smoothing < 1, "--label-smoothing", self.label_smoothing, "a fraction in [0, 1)")
        for option, value in (("--mixup", self.mixup), ("--cutmix", self.cutmix)):
            require(0 <= value <= 10, option, value, "a Beta(a, a) parameter between 0 (off) and 10 (MixUp: 0.2 to 0.4 is usual; CutMix: 1)")
        if self.mixing and self.cached_views > 1:
            raise InvalidOptionError(
                f"--cached-views {self.cached_views} caches backbone features of single images, and --mixup/--cutmix mix "
                f"images, so they cannot be combined: drop --cached-views (a frozen backbone then runs on the mixed images)."
            )
        unused = [name for name, given in (("--label-smoothing", self.label_smoothing), ("--schedule", self.schedule),
                                           ("--tensorboard", self.tensorboard)) if given]
        if head == "logistic" and not self.finetune_epochs and unused:
            raise InvalidOptionError(
                f"--head logistic without --finetune-epochs fits the head in closed form and trains nothing by gradient "
                f"descent, so {', '.join(unused)} would have no effect; drop {'it' if len(unused) == 1 else 'them'}, or add "
                f"--finetune-epochs N."
            )
        if self.mixing and head == "logistic":
            raise InvalidOptionError("--head logistic fits unmixed features in closed form; drop --mixup/--cutmix, or use --head dense.")
        if head == "logistic" and scratch:
            raise InvalidOptionError(
                f"--head logistic fits a linear classifier on a backbone's features; {spec.name} is trained from "
                f"scratch. Use a pretrained backbone, or --weights RUN_DIR to reuse a run's layers."
            )
        require(head != "logistic" or self.head_units == 0, "--head-units", self.head_units,
                "0 with --head logistic (a logistic regression is the softmax layer alone)")
        if scratch and self.finetune_epochs:
            raise InvalidOptionError(
                f"{spec.name} is trained from scratch in one stage; received --finetune-epochs "
                f"{self.finetune_epochs}. Use --epochs for baselines (or --weights RUN_DIR to reuse a run's layers)."
            )
        return dataclasses.replace(
            self, backbone=spec.source or spec.name, weights=weights, image_size=image_size, lr=lr, optimizer=optimizer, head=head,
            epochs=epochs,
            finetune_lr=finetune_lr, schedule=self.schedule or DEFAULT_SCHEDULES["scratch" if scratch else "frozen"],
            finetune_schedule=self.finetune_schedule or DEFAULT_SCHEDULES["finetune"],
        )

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
            finetune_epochs=self.finetune_epochs if transfers else 0,
            preprocess=self.preprocess if is_file else None, backbone_layer=self.backbone_layer if is_file else None,
        )

    def backbone_spec(self) -> BackboneSpec:
        """The backbone's registry entry, or the description of its model file or keras-hub preset
        (that of a `--weights RUN_DIR` run is read from the run: the file is not needed again).

        Raises:
            InvalidOptionError: see `transfer.backbones.get_backbone`.
        """
        name = self.backbone or DEFAULT_BACKBONE
        if self.source_run is not None and is_external(name):
            from transfer.artifacts import Run

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
    from transfer.artifacts import Run

    config = Run.open(source).config()
    if "backbone" not in config or "image_size" not in config:
        raise InvalidOptionError(f"--weights {source}: a run directory needs its config.json (written by `transfer train`).")
    if backbone and backbone != config["backbone"]:
        raise InvalidOptionError(
            f"--backbone {backbone} differs from the backbone of the run in --weights {source} "
            f"({config['backbone']}); omit --backbone, the run's is used."
        )
    if image_size and image_size != config["image_size"]:
        raise InvalidOptionError(
            f"--image-size {image_size} differs from the run in --weights {source} ({config['image_size']}); "
            f"omit --image-size, the run's is used."
        )
    return config["backbone"], config["image_size"]


def default_batch_size(num_train: int) -> int:
    """32 images a step, fewer on small data so that an epoch is at least 10 steps, but not under 8.

    A few hundred images at 32 a step make an epoch of a handful of steps, and a 30-epoch stage
    too few for its learning-rate schedule: LeNet-5 on 160 `shapes` images went from 0.69 to 0.90
    validation accuracy at 16 a step (README, "Baselines that learn").
    """
    return max(8, min(32, num_train // 10))
