"""The command line's choices and shared options, taken from the library's own lists.

`TRAIN_OPTIONS` declares once the options of `train` that choose the data, the model and the
recipe (the fields of `transfer.training.options.TrainOptions`); `with_train_options` gives them to `lr-find`,
`cross-validate` and `compare` as well, and `train_options_of` turns the values back into a
`TrainOptions`.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from transfer.models.registry import BACKBONES, FILE_PREPROCESSING
from transfer.datasets import RECIPES
from transfer.core.choices import CALIBRATIONS, CLASS_WEIGHTS, DEFAULT_SCHEDULES, EXPORT_FORMATS, FLIPS, HEADS, OPTIMIZERS, QUANTIZATIONS, SCHEDULES
from transfer.training.options import TrainOptions
from transfer.training.distribute import STRATEGIES

def _choices(name: str, values) -> type[Enum]:
    """A `str` Enum of the library's own list of values, so the CLI offers exactly what it accepts."""
    return Enum(name, {value: value for value in values}, type=str)


PreprocessMode = _choices("PreprocessMode", FILE_PREPROCESSING)


Optimizer = _choices("Optimizer", OPTIMIZERS)


StrategyName = _choices("StrategyName", STRATEGIES)


Flip = _choices("Flip", FLIPS)


ClassWeight = _choices("ClassWeight", CLASS_WEIGHTS)


DatasetName = _choices("DatasetName", RECIPES)


HeadName = _choices("HeadName", HEADS)


OutputFormat = _choices("OutputFormat", ("table", "csv", "json"))


ExportFormat = _choices("ExportFormat", EXPORT_FORMATS)


Quantization = _choices("Quantization", QUANTIZATIONS)


Schedule = _choices("Schedule", SCHEDULES)
CalibrationName = _choices("CalibrationName", CALIBRATIONS)


DEFAULTS = TrainOptions()


# Options that `train` and `compare` share, declared once.
Weights = Annotated[Optional[str], typer.Option(help="imagenet | none | PATH to a weights file | RUN_DIR of an earlier run, whose backbone (a baseline's convolutional layers) is reused under a new head. Default: imagenet for pretrained backbones, none for baselines.")]


Epochs = Annotated[Optional[int], typer.Option(help="Epochs of stage 1 (frozen backbone; whole model for baselines). Default: 10. Given with a pretrained backbone, it asks for --head dense (the logistic head has no epochs).", show_default=False)]


FinetuneEpochs = Annotated[int, typer.Option(help="Epochs of stage 2 (fine-tuning) for pretrained backbones; 0 = frozen only.")]


ImageSize = Annotated[Optional[int], typer.Option(help="Square input side. Default: the backbone's (224, 299, 32, 227).")]


BatchSize = Annotated[Optional[int], typer.Option(help="Images per step per replica. Default: 32, or fewer (down to 8) so that an epoch has at least 10 steps.", show_default=False)]


Augment = Annotated[bool, typer.Option(help="Random flip, rotation, zoom, translation and contrast while training (baselines: flip and translation).")]


FlipOption = Annotated[Flip, typer.Option("--flip", help="Flips used by augmentation; 'none' for digits or text.")]


ValDir = Annotated[Optional[Path], typer.Option(help="Pre-split validation folder with the same classes.")]


ValSplit = Annotated[float, typer.Option(help="Share of each class held out for validation (without --val-dir).")]


Seed = Annotated[int, typer.Option(help="Seed for the split, initialization, shuffling and augmentation.")]


CacheDir = Annotated[Optional[Path], typer.Option(help="Where backbone features are kept between runs. Default: ~/.cache/transfer/features.", show_default=False)]


# The options of `train` that choose the data, the model and the recipe: the fields of `TrainOptions`,
# declared once; `lr-find` and `cross-validate` take the same (`with_train_options`).
TRAIN_OPTIONS: dict[str, tuple[object, object]] = {
    # ModelOptions: what the network is
    "backbone": (Annotated[Optional[str], typer.Option(help=f"{' | '.join(BACKBONES)} (pretrained backbones and from-scratch baselines) | PATH.keras (a Keras model file of images to features; a final softmax classifier is cut off) | keras-hub:PRESET (a keras-hub preset name or local preset folder; the hub extra). auto: probe the --backbones candidates on these images and train the winner (`transfer probe`). Default: resnet50, or the backbone of the --weights run.", show_default=False)], None),
    "candidates": (Annotated[Optional[str], typer.Option("--backbones", help="With --backbone auto: the comma-separated backbones to probe (registry names, PATH.keras, keras-hub:PRESET). Default: the registry's pretrained backbones.", show_default=False)], None),
    "preprocess": (Annotated[Optional[PreprocessMode], typer.Option(help="For --backbone PATH.keras: none (the model reads raw RGB in [0, 255] and preprocesses itself) | caffe | tf | torch (a keras.applications mode applied before it). Default: none.", show_default=False)], None),
    "backbone_layer": (Annotated[Optional[str], typer.Option(help="For --backbone PATH.keras: the layer whose output are the features. Default: the model's output, below a final softmax classifier and global average pooling.", show_default=False)], None),
    "weights": (Weights, DEFAULTS.weights),
    "image_size": (ImageSize, DEFAULTS.image_size),
    "head": (Annotated[Optional[HeadName], typer.Option(help="logistic: the frozen stage's softmax layer fitted by scikit-learn's logistic regression (C by cross-validation) on the backbone's features; dense: trained by gradient descent. Default: logistic (measured on real pretrained features), or dense where --epochs, --mixup, --cutmix, --label-smoothing, --head-units, --lr, --schedule, --cached-views K, --no-cache-features, --tensorboard without fine-tuning, or multi-worker training need it.", show_default=False)], None),
    "head_units": (Annotated[int, typer.Option(help="Hidden dense units in the new head; 0 for none.")], DEFAULTS.head_units),
    "dropout": (Annotated[float, typer.Option(help="Dropout rate of the new head.")], DEFAULTS.dropout),
    "mixed_precision": (Annotated[bool, typer.Option("--mixed-precision", help="float16 compute with float32 weights (for GPUs with tensor cores).")], DEFAULTS.mixed_precision),
    # DataOptions: which images
    "val_split": (ValSplit, DEFAULTS.val_split),
    "val_dir": (ValDir, None),
    "manifest": (Annotated[Optional[Path], typer.Option(help="CSV file with columns path,label[,split] to train on instead of DATA_DIR; path,labels[,split] (labels separated by ;, none allowed) is multi-label.")], None),
    "multi_label": (Annotated[bool, typer.Option("--multi-label", help="Zero or more labels per image: one sigmoid per label, each with a threshold chosen on validation. Needs a --manifest with a labels column, which switches it on by itself.")], DEFAULTS.multi_label),
    "dedupe": (Annotated[bool, typer.Option("--dedupe", help="Remove validation images that are byte-for-byte copies of training images.")], DEFAULTS.dedupe),
    "allow_split_names": (Annotated[bool, typer.Option("--allow-split-names", help="Accept class folders all named like splits (train, val, test...); refused otherwise as the folder above the splits given by mistake.")], DEFAULTS.allow_split_names),
    "class_weight": (Annotated[ClassWeight, typer.Option(help="auto: weight the loss by scikit-learn's balanced class weights.")], ClassWeight(DEFAULTS.class_weight)),
    "augment": (Augment, DEFAULTS.augment),
    "flip": (FlipOption, Flip(DEFAULTS.flip)),
    # RecipeOptions: how it is trained
    "epochs": (Epochs, DEFAULTS.epochs),
    "finetune_epochs": (FinetuneEpochs, DEFAULTS.finetune_epochs),
    "unfreeze": (Annotated[str, typer.Option(help="Stage 2 unfreezes the top N backbone layers, or 'all'. BatchNormalization stays frozen.")], DEFAULTS.unfreeze),
    "lr": (Annotated[Optional[float], typer.Option(help="Stage 1 learning rate. Default: 1e-3 for a new head; for a baseline from scratch its own (lenet 0.03, alexnet 0.01). `transfer lr-find` suggests one.", show_default=False)], DEFAULTS.lr),
    "finetune_lr": (Annotated[Optional[float], typer.Option(help="Stage 2 learning rate. Default: 1e-5 for a pretrained backbone (measured on real pretrained features); --lr itself for a baseline's layers reused from a run (--weights RUN_DIR).")], DEFAULTS.finetune_lr),
    "optimizer": (Annotated[Optional[Optimizer], typer.Option(help="sgd uses Nesterov momentum 0.9. Default: adam for a new head, sgd for a baseline from scratch.", show_default=False)], DEFAULTS.optimizer),
    "schedule": (Annotated[Optional[Schedule], typer.Option(help=f"Stage 1 learning-rate schedule: constant | cosine (to 1%) | onecycle (fastai's, with warm-up). Default: {DEFAULT_SCHEDULES['frozen']}.", show_default=False)], None),
    "finetune_schedule": (Annotated[Optional[Schedule], typer.Option(help=f"Stage 2 learning-rate schedule. Default: {DEFAULT_SCHEDULES['finetune']}.", show_default=False)], None),
    "patience": (Annotated[Optional[int], typer.Option(help="Epochs without a better validation accuracy (ties: loss) before a stage stops. Default: a third of the stage's epochs, at least 5.", show_default=False)], DEFAULTS.patience),
    "batch_size": (BatchSize, DEFAULTS.batch_size),
    "label_smoothing": (Annotated[float, typer.Option(help="Targets of 1 - X on the true class plus X / classes on every class (0.1 is usual).")], DEFAULTS.label_smoothing),
    "mixup": (Annotated[float, typer.Option(help="MixUp on training batches with Beta(A, A) weights (0.2 to 0.4 is usual); 0 = off.")], DEFAULTS.mixup),
    "cutmix": (Annotated[float, typer.Option(help="CutMix on training batches: a box of another image pasted in, its area share from Beta(A, A) (1.0 is usual); 0 = off. With --mixup, each batch gets one of the two.")], DEFAULTS.cutmix),
    "calibrate": (Annotated[CalibrationName, typer.Option(help="temperature: after training, fit one temperature on the validation split (it changes no prediction) and build it into the model, so that a probability of 0.9 means right about nine times in ten; none: keep the probabilities as trained.")], CalibrationName(DEFAULTS.calibrate)),
    # RuntimeOptions: where it runs
    "seed": (Seed, DEFAULTS.seed),
    "strategy": (Annotated[StrategyName, typer.Option(help="auto: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy on more than one GPU, else one device.")], StrategyName(DEFAULTS.strategy)),
    "cache_features": (Annotated[bool, typer.Option(help="Frozen stage: run the backbone once per image and train the head on cached features.")], DEFAULTS.cache_features),
    "cached_views": (Annotated[int, typer.Option(help="Frozen stage with augmentation: 1 caches one unaugmented view per image (measured no worse, and cheapest), K > 1 caches K augmented views, 0 augments with the backbone in the loop every epoch.")], DEFAULTS.cached_views),
    "cache_dir": (CacheDir, None),
    "tensorboard": (Annotated[bool, typer.Option("--tensorboard", help="Write Keras TensorBoard logs of every stage to RUN_DIR/logs (view: tensorboard --logdir RUN_DIR/logs).")], DEFAULTS.tensorboard),
}


def with_train_options(command=None, *, without: tuple[str, ...] = (), helps: dict[str, str] | None = None):
    """Gives `command` the options of `TRAIN_OPTIONS` (less those `without`), after its own; they
    reach it as `**options`. `helps` replaces the help of some of them, where the command uses them
    otherwise than `train` does."""
    if command is None:
        return lambda command: with_train_options(command, without=without, helps=helps)
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                          annotation=_with_help(annotation, (helps or {}).get(name)))
        for name, (annotation, default) in TRAIN_OPTIONS.items() if name not in without
    ]
    command.__signature__ = inspect.Signature(own + added)
    command.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in added}}
    return command


def _with_help(annotation, help: str | None):
    """`annotation` (`Annotated[type, typer.Option(...)]`) with its option's help replaced by `help`."""
    if help is None:
        return annotation
    import copy
    import typing

    kind, option = typing.get_args(annotation)
    option = copy.copy(option)
    option.help = help
    return Annotated[kind, option]


def train_options_of(chosen: dict) -> TrainOptions:
    """The `TrainOptions` of the command-line values of `TRAIN_OPTIONS` (choices and paths as strings)."""
    def plain(value):
        return value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value

    return TrainOptions(**{name: plain(chosen[name]) for name in TRAIN_OPTIONS if name in chosen})


def option_name(parameter: str) -> str:
    return "DATA_DIR" if parameter == "data_dir" else "--" + parameter.replace("_", "-")
