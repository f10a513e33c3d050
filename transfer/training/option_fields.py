"""Every option of a training run declared once: its name, type and default (a field of
`TrainFields`, which `transfer.training.options.TrainOptions` extends with its behaviour), its group,
its help, its choices, the flag the command line spells it with, and the commands that take it.

The groups' checks (`transfer.training.option_groups`), the command line's options
(`transfer.cli.parameters`) and the table of docs/commands.md are all made from these declarations,
so adding an option touches this file alone (and its checks, if it has any). The library names an
option by its field name; `option_flag` spells it as the command line does (`candidates` is
`--backbones`). Imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from transfer.core.choices import (CALIBRATIONS, CLASS_WEIGHTS, DEFAULT_SCHEDULES, FLIPS, HEADS, OPTIMIZERS, SCHEDULES,
                                   UNKNOWN_DETECTORS, UNKNOWN_SHARE)
from transfer.models.external import POOLINGS
from transfer.models.registry import BACKBONES, FILE_PREPROCESSING
from transfer.training.distribute import STRATEGIES

#: The groups of options, in the order the command line lists them (`transfer.training.option_groups`).
GROUPS = ("model", "data", "recipe", "runtime")
#: The commands that train, each taking every option of the recipe.
TRAINING = ("train", "lr-find", "cross-validate", "compare")
#: Every command that takes training options: those that train, and `audit` and `probe`, which fit on frozen features.
COMMANDS = (*TRAINING, "audit", "probe")
EVERY = COMMANDS
#: How an option may be spelled on the command line, besides its name, type, default and help (`option`).
SPELLING = {
    "flag": "the flag, where it is not the name with dashes",
    "choices": "the values it takes (the library's own tuple)",
    "show_default": "False to leave the default out of the help",
    "negatable": "True for a --name/--no-name pair (a flag alone otherwise)",
    "path": "True where the command line takes a path",
    "helps": "the help of the commands that use it otherwise than `train`, by command",
}


def option(default, group: str, help: str, commands: tuple[str, ...], **spelling) -> dataclasses.Field:
    """A field of `TrainFields` with what the command line, the checks and the docs need to know of it
    in its metadata: `group` (one of `GROUPS`), `help`, the `commands` that take it, and any of `SPELLING`."""
    if group not in GROUPS or not set(commands) <= set(COMMANDS) or not set(spelling) <= set(SPELLING):
        raise ValueError(f"option: group {group!r}, commands {commands} or spelling {sorted(spelling)} not declared")
    return dataclasses.field(default=default, metadata={"group": group, "help": help, "commands": tuple(commands), **spelling})


_BACKBONE_NAMES = " | ".join(BACKBONES)


@dataclass(frozen=True)
class TrainFields:
    """The options of a training run, flat as the command line gives them, in four groups: what the
    network is (model), which images (data), how it is trained (recipe) and where it runs (runtime).
    `None` is "the default", which may depend on other options: `TrainOptions.resolved()` fills it in.
    Each field's help is in its metadata (`option_help`), and in the table of docs/commands.md."""

    # What the network is (`ModelOptions`).
    backbone: str | None = option(None, "model", f"{_BACKBONE_NAMES} (pretrained backbones and from-scratch baselines) | PATH.keras (a Keras model file of images to features; a final softmax classifier is cut off) | keras-hub:PRESET (a keras-hub preset name or local preset folder; the hub extra). auto: probe the --backbones candidates on these images and train the winner (`transfer probe`). Default: resnet50, or the backbone of the --weights run.",
                                  ("train", "lr-find", "audit"), show_default=False, helps={
        "audit": f"{_BACKBONE_NAMES} | PATH.keras | keras-hub:PRESET: a pretrained backbone (or file, or preset) is frozen and "
                 "a logistic regression fitted on its features per fold; lenet and alexnet are trained on each fold. Default: resnet50."})
    candidates: str | None = option(None, "model", "With --backbone auto: the comma-separated backbones to probe (registry names, PATH.keras, keras-hub:PRESET). Default: the registry's pretrained backbones.",
                                    ("train",), flag="--backbones", show_default=False)
    preprocess: str | None = option(None, "model", "For --backbone PATH.keras: none (the model reads raw RGB in [0, 255] and preprocesses itself) | caffe | tf | torch (a keras.applications mode applied before it). Default: none.",
                                    EVERY, choices=FILE_PREPROCESSING, show_default=False, helps={
        "probe": "For the model files in --backbones: none (the model reads raw RGB in [0, 255]) | caffe | tf | torch. Default: none."})
    backbone_layer: str | None = option(None, "model", "For --backbone PATH.keras: the layer whose output are the features. Default: the model's output, below a final softmax classifier and global average pooling.",
                                        EVERY, show_default=False, helps={"probe": "For the model files in --backbones: the layer whose output are the features."})
    # --pooling: the tokens of a keras-hub ViT, DINOv2 or SigLIP (transfer.models.external.POOLINGS).
    pooling: str = option("auto", "model", "For a backbone that returns tokens (a keras-hub ViT, DINOv2 or SigLIP preset, or a model file): cls (its class token) | mean (the mean of its patch tokens) | auto (cls where the backbone has a class token, as ViT and DINOv2; mean otherwise, as SigLIP).",
                          EVERY, choices=POOLINGS)
    weights: str | None = option(None, "model", "imagenet | none | PATH to a weights file | RUN_DIR of an earlier run, whose backbone (a baseline's convolutional layers) is reused under a new head. Default: imagenet for pretrained backbones, none for baselines.", EVERY)
    image_size: int | None = option(None, "model", "Square input side. Default: the backbone's (224, 299, 32, 227).", EVERY)
    head: str | None = option(None, "model", "logistic: the frozen stage's softmax layer fitted by scikit-learn's logistic regression (C by cross-validation) on the backbone's features; dense: trained by gradient descent. Default: logistic (measured on real pretrained features), or dense where --epochs, --mixup, --cutmix, --label-smoothing, --head-units, --lr, --schedule, --cached-views K, --no-cache-features, --tensorboard without fine-tuning, or multi-worker training need it.",
                              TRAINING, choices=HEADS, show_default=False)
    head_units: int = option(0, "model", "Hidden dense units in the new head; 0 for none.", TRAINING)
    dropout: float = option(0.2, "model", "Dropout rate of the new head.", TRAINING)
    mixed_precision: bool = option(False, "model", "float16 compute with float32 weights (for GPUs with tensor cores).", TRAINING)
    # Which images, and how they are split, weighted and augmented (`DataOptions`).
    val_split: float = option(0.2, "data", "Share of each class held out for validation (without --val-dir).", EVERY, helps={
        "audit": "lenet/alexnet: the share of each fold's training images that stops its training early.",
        "probe": "With --curve (and no --val-dir): the share of each class held out to score the curve."})
    val_dir: str | None = option(None, "data", "Pre-split validation folder with the same classes.", ("train", "lr-find", "compare", "probe"), path=True)
    manifest: str | None = option(None, "data", "CSV file with columns path,label[,split] to train on instead of DATA_DIR; path,labels[,split] (labels separated by ;, none allowed) is multi-label.",
                                  EVERY, path=True, helps={"audit": "CSV file with columns path,label to audit instead of DATA_DIR (its split column is not used)."})
    multi_label: bool = option(False, "data", "Zero or more labels per image: one sigmoid per label, each with a threshold chosen on validation. Needs a --manifest with a labels column, which switches it on by itself.", TRAINING)
    dedupe: bool = option(False, "data", "Remove validation images that are byte-for-byte copies of training images.", TRAINING)
    allow_split_names: bool = option(False, "data", "Accept class folders all named like splits (train, val, test...); refused otherwise as the folder above the splits given by mistake.", EVERY)
    class_weight: str = option("none", "data", "auto: weight the loss by scikit-learn's balanced class weights.", (*TRAINING, "audit"), choices=CLASS_WEIGHTS)
    augment: bool = option(True, "data", "Random flip, rotation, zoom, translation and contrast while training (baselines: flip and translation).", (*TRAINING, "audit"), negatable=True)
    flip: str = option("horizontal", "data", "Flips used by augmentation; 'none' for digits or text.", (*TRAINING, "audit"), choices=FLIPS)
    # How it is trained: stages, rates, schedules, regularization (`RecipeOptions`).
    epochs: int | None = option(None, "recipe", "Epochs of stage 1 (frozen backbone; whole model for baselines). Default: 10. Given with a pretrained backbone, it asks for --head dense (the logistic head has no epochs).",
                                (*TRAINING, "audit"), show_default=False)
    finetune_epochs: int = option(0, "recipe", "Epochs of stage 2 (fine-tuning) for pretrained backbones; 0 = frozen only.", TRAINING)
    unfreeze: str = option("all", "recipe", "Stage 2 unfreezes the top N backbone layers, or 'all'. BatchNormalization stays frozen.", TRAINING)
    lr: float | None = option(None, "recipe", "Stage 1 learning rate. Default: 1e-3 for a new head; for a baseline from scratch its own (lenet 0.03, alexnet 0.01). `transfer lr-find` suggests one.",
                              (*TRAINING, "audit"), show_default=False)
    finetune_lr: float | None = option(None, "recipe", "Stage 2 learning rate. Default: 1e-5 for a pretrained backbone (measured on real pretrained features); --lr itself for a baseline's layers reused from a run (--weights RUN_DIR).", TRAINING)
    optimizer: str | None = option(None, "recipe", "sgd uses Nesterov momentum 0.9. Default: adam for a new head, sgd for a baseline from scratch.",
                                   (*TRAINING, "audit"), choices=OPTIMIZERS, show_default=False)
    schedule: str | None = option(None, "recipe", f"Stage 1 learning-rate schedule: constant | cosine (to 1%) | onecycle (fastai's, with warm-up). Default: {DEFAULT_SCHEDULES['frozen']}.",
                                  (*TRAINING, "audit"), choices=SCHEDULES, show_default=False)
    finetune_schedule: str | None = option(None, "recipe", f"Stage 2 learning-rate schedule. Default: {DEFAULT_SCHEDULES['finetune']}.", TRAINING, choices=SCHEDULES, show_default=False)
    patience: int | None = option(None, "recipe", "Epochs without a better validation accuracy (ties: loss) before a stage stops. Default: a third of the stage's epochs, at least 5.",
                                  (*TRAINING, "audit"), show_default=False)
    batch_size: int | None = option(None, "recipe", "Images per step per replica. Default: 32, or fewer (down to 8) so that an epoch has at least 10 steps.",
                                    EVERY, show_default=False, helps={"probe": "Images per batch of each backbone's pass. Default: 32."})
    label_smoothing: float = option(0.0, "recipe", "Targets of 1 - X on the true class plus X / classes on every class (0.1 is usual).", TRAINING)
    mixup: float = option(0.0, "recipe", "MixUp on training batches with Beta(A, A) weights (0.2 to 0.4 is usual); 0 = off.", TRAINING)
    cutmix: float = option(0.0, "recipe", "CutMix on training batches: a box of another image pasted in, its area share from Beta(A, A) (1.0 is usual); 0 = off. With --mixup, each batch gets one of the two.", TRAINING)
    calibrate: str = option("temperature", "recipe", "temperature: after training, fit one temperature on the validation split (a refit logistic head: on its out-of-fold probabilities; it changes no prediction) and build it into the model, so that a probability of 0.9 means right about nine times in ten; none: keep the probabilities as trained.",
                            TRAINING, choices=CALIBRATIONS)
    # Every labelled image used (`--refit`, issue 33): one block, kept together.
    refit: bool = option(True, "recipe", "--head logistic (single-label, without fine-tuning): estimate the accuracy by a cross-validation (up to 5 folds) over the training and validation images (out-of-fold predictions, C chosen within each fold; what metrics.json and the report show, and what the temperature is fitted on), then fit the head on all of them. --no-refit: fit on the training split alone and measure on the validation split. Fine-tuning and the dense head choose their epochs on the validation split, and never refit.",
                         ("train", "cross-validate"), negatable=True)
    # Images outside the classes (issue 34): one block, kept together.
    unknown: str = option("knn", "recipe", "After training, record an open-set detector: the distance of an image's features to its nearest training image (knn), or to the nearest class under their shared covariance (mahalanobis_l2: on L2-normalised features; mahalanobis), with a threshold set on held-out folds of the training images. predict, evaluate, serve and every export then answer 'unknown' for an image beyond it, and give its novelty score. off: record none.",
                          ("train", "cross-validate"), choices=UNKNOWN_DETECTORS)
    unknown_share: float = option(UNKNOWN_SHARE, "recipe", "The share of the training images' held-out folds the detector's threshold answers 'unknown' (about the share of in-class photos it will call unknown): lower rejects fewer far-away photos too.",
                                  ("train", "cross-validate"))
    # Where and how it runs: the seed, the strategy, the feature cache, logs (`RuntimeOptions`).
    seed: int = option(42, "runtime", "Seed for the split, initialization, shuffling and augmentation.", EVERY)
    strategy: str = option("auto", "runtime", "auto: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy on more than one GPU, else one device.", TRAINING, choices=STRATEGIES)
    cache_features: bool = option(True, "runtime", "Frozen stage: run the backbone once per image and train the head on cached features.", (*TRAINING, "probe"), negatable=True, helps={
        "probe": "Keep each backbone's features in the feature cache, so a second probe skips the pass."})
    cached_views: int = option(1, "runtime", "Frozen stage with augmentation: 1 caches one unaugmented view per image (measured no worse, and cheapest), K > 1 caches K augmented views, 0 augments with the backbone in the loop every epoch.", TRAINING)
    cache_dir: str | None = option(None, "runtime", "Where backbone features are kept between runs. Default: ~/.cache/transfer/features.", EVERY, path=True, show_default=False)
    tensorboard: bool = option(False, "runtime", "Write Keras TensorBoard logs of every stage to RUN_DIR/logs (view: tensorboard --logdir RUN_DIR/logs).", TRAINING)


#: Every option's field, by name, in the order declared.
FIELDS: dict[str, dataclasses.Field] = {field.name: field for field in dataclasses.fields(TrainFields)}


def option_flag(name: str, negated: bool = False) -> str:
    """How the command line spells option `name` (`lr` is `--lr`, `candidates` is `--backbones`;
    `negated`: `--no-cache-features`): the one place that knows, for every message that names an option."""
    field = FIELDS.get(name)
    spelled = field.metadata.get("flag", f"--{name.replace('_', '-')}") if field else f"--{name.replace('_', '-')}"
    return spelled.replace("--", "--no-", 1) if negated else spelled


class _Flags:
    """`flag.lr` is `option_flag("lr")`, for messages written by name: f"{flag.lr} must be ..."."""

    def __getattr__(self, name: str) -> str:
        if name not in FIELDS:
            raise AttributeError(f"no option {name!r}")
        return option_flag(name)


flag = _Flags()


def options_of(command: str) -> list[str]:
    """The options that `command` takes, by name, in the order declared."""
    if command not in COMMANDS:
        raise ValueError(f"{command!r} takes no training options; those that do: {', '.join(COMMANDS)}")
    return [name for name, field in FIELDS.items() if command in field.metadata["commands"]]


def option_help(name: str, command: str = "train") -> str:
    """The help of option `name` in `command` (`audit` and `probe` use some otherwise than `train`)."""
    metadata = FIELDS[name].metadata
    return metadata.get("helps", {}).get(command, metadata["help"])


def group_fields(group: str) -> list[dataclasses.Field]:
    """The fields of `group` (one of `GROUPS`), in the order declared."""
    return [field for field in FIELDS.values() if field.metadata["group"] == group]
