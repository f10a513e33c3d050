"""The `transfer` command line: thin commands over the `transfer` library.

Each command gathers its options, calls one library function, and turns the library's
`TransferError`s, and the file system's and memory's errors, into a one-line message and a non-zero
exit code, without a traceback (`user_errors`). Nothing here imports TensorFlow: the library
checks options and outputs first and imports it when the work starts, so `--help`, `--version`,
`backbones` and option errors answer at once. TensorFlow's own start-up lines (written by its C++
runtime straight to the terminal) are hidden unless `--verbose`.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from typer.core import TyperGroup

try:  # Typer 0.2x carries its own copy of Click, whose exceptions its commands raise
    from typer import _click as click
except ImportError:  # older Typer uses Click itself
    import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from transfer import __version__
from transfer.backbones import BACKBONES, FILE_PREPROCESSING
from transfer.datasets import RECIPES
from transfer.errors import TransferError
from transfer.options import (
    CLASS_WEIGHTS, DEFAULT_SCHEDULES, EXPORT_FORMATS, FLIPS, HEADS, OPTIMIZERS, QUANTIZATIONS, SCHEDULES, STRATEGIES,
    TrainOptions,
)
from transfer.progress import Reporter

class _OneLineError(click.exceptions.ClickException):
    """Click's own parsing errors (an unknown option, a value not among the choices, a missing
    argument) said as every other error is: one `error:` line, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        messages.print(f"[bold red]error:[/bold red] {escape(self.message)}", highlight=False)


#: Names users type for a choice that has another name here.
_ALIASES = {"tflite": "litert", "tf-lite": "litert", "saved_model": "savedmodel", "saved-model": "savedmodel"}


def _one_line(error: click.exceptions.UsageError) -> _OneLineError:
    """`error` as one line, with the closest choice for a near miss and the command's --help."""
    import difflib
    import re

    text = " ".join(error.format_message().replace("Value error, ", "").split())
    if isinstance(error, click.exceptions.NoSuchOption) and error.possibilities:
        close = difflib.get_close_matches(error.option_name, sorted(error.possibilities), n=1, cutoff=0.0)
        text = f"No such option: {error.option_name}. Did you mean {close[0]}?"
    text = text if text.endswith((".", "?")) else text + "."
    wrong = re.search(r"'([^']*)' is not one of (.*)\.$", text)
    if wrong:
        value, choices = wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2))
        close = [_ALIASES[value.lower()]] if value.lower() in _ALIASES else difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        if close and close[0] in choices:
            text += f" Did you mean {close[0]}?"
    command = " ".join(["transfer", *(error.ctx.command_path.split()[1:] if error.ctx is not None else [])])
    return _OneLineError(f"{text} See `{command} --help`.")


class _App(TyperGroup):
    """The `transfer` group: every parsing error of it and of its commands is one line (`_one_line`)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.exceptions.UsageError as error:
            raise _one_line(error) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.exceptions.UsageError as error:
            raise _one_line(error) from None


app = typer.Typer(
    cls=_App,
    help="Transfer learning on small image datasets: train, predict, export, evaluate, report, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # Click's plain help: every option name whole, at any terminal width
)
# stdout carries what the user asked for; stderr progress, warnings and errors. Neither hard-wraps
# long lines (paths, URLs) when it is not a terminal.
results = Console(width=None if sys.stdout.isatty() else 200)
messages = Console(stderr=True, soft_wrap=True)


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


class RichReporter(Reporter):
    """Messages and progress bars on stderr, so stdout carries only results."""

    def message(self, text: str) -> None:
        messages.print(escape(text), highlight=False)

    def warning(self, text: str) -> None:
        messages.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=messages, transient=False) as bar:
            task = bar.add_task(description, total=total)

            class _Advance:
                def advance(self, amount: int = 1) -> None:
                    bar.advance(task, amount)

            yield _Advance()


@contextmanager
def user_errors() -> Iterator[None]:
    """Prints an error as one clear line and exits with its code: a `TransferError` with its own
    (2 for bad input or options, 1 otherwise), a file-system or out-of-memory error with 1, 130 on
    Ctrl-C."""
    try:
        yield
    except TransferError as error:
        _error(" ".join(str(error).split("\n")), error.exit_code, error.label)
    except KeyboardInterrupt:
        messages.print("[bold red]interrupted[/bold red]")
        raise typer.Exit(code=130) from None
    except BrokenPipeError:  # the reader of stdout (`| head`) has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(code=0) from None
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        _error(f"cannot write or read{where}: {error.strerror or error}. Free some space, or choose a location "
               f"you can write to; the earlier output, if any, is unchanged.", 1)
    except Exception as error:
        if type(error).__name__ != "ResourceExhaustedError":
            raise
        if "space" in str(error).lower():  # TensorFlow's file system reports a full disk so too
            _error(f"no space left to write ({str(error).splitlines()[0][:200]}). Free some space; the earlier "
                   f"output, if any, is unchanged.", 1)
        _error("out of memory while training or predicting. Lower --batch-size or --image-size.", 1)


def _error(text: str, code: int, label: str = "error") -> None:
    messages.print(f"[bold red]{label}:[/bold red] {escape(text)}", highlight=False)
    raise typer.Exit(code=code)


def _version(value: bool) -> None:
    if value:
        results.print(f"transfer {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_version)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show TensorFlow's own start-up and log lines.")] = False,
) -> None:
    """Transfer learning on small image datasets: train, predict, export, evaluate, report, compare."""
    if not verbose:
        _hide_native_logs()
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")


def _hide_native_logs() -> None:
    """Sends what TensorFlow's C++ runtime writes to the terminal's stderr (oneDNN, absl, CUDA
    notices) to /dev/null; this program's own messages and Python's warnings keep the terminal."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # its Python warnings too (tf.function retracing)
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, ValueError, io.UnsupportedOperation):  # not a real stream (tests)
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")


# The options of `train` that choose the data, the model and the recipe: the fields of `TrainOptions`,
# declared once; `lr-find` and `cross-validate` take the same (`_with_train_options`).
TRAIN_OPTIONS: dict[str, tuple[object, object]] = {
    "backbone": (Annotated[Optional[str], typer.Option(help=f"{' | '.join(BACKBONES)} (pretrained backbones and from-scratch baselines) | PATH.keras (a Keras model file of images to features; a final softmax classifier is cut off) | keras-hub:PRESET (a keras-hub preset name or local preset folder; the hub extra). Default: resnet50, or the backbone of the --weights run.", show_default=False)], None),
    "preprocess": (Annotated[Optional[PreprocessMode], typer.Option(help="For --backbone PATH.keras: none (the model reads raw RGB in [0, 255] and preprocesses itself) | caffe | tf | torch (a keras.applications mode applied before it). Default: none.", show_default=False)], None),
    "backbone_layer": (Annotated[Optional[str], typer.Option(help="For --backbone PATH.keras: the layer whose output are the features. Default: the model's output, below a final softmax classifier and global average pooling.", show_default=False)], None),
    "weights": (Weights, DEFAULTS.weights),
    "epochs": (Epochs, DEFAULTS.epochs),
    "finetune_epochs": (FinetuneEpochs, DEFAULTS.finetune_epochs),
    "unfreeze": (Annotated[str, typer.Option(help="Stage 2 unfreezes the top N backbone layers, or 'all'. BatchNormalization stays frozen.")], DEFAULTS.unfreeze),
    "lr": (Annotated[Optional[float], typer.Option(help="Stage 1 learning rate. Default: 1e-3 for a new head; for a baseline from scratch its own (lenet 0.03, alexnet 0.01). `transfer lr-find` suggests one.", show_default=False)], DEFAULTS.lr),
    "finetune_lr": (Annotated[Optional[float], typer.Option(help="Stage 2 learning rate. Default: 1e-5 for a pretrained backbone (measured on real pretrained features); --lr itself for a baseline's layers reused from a run (--weights RUN_DIR).")], DEFAULTS.finetune_lr),
    "schedule": (Annotated[Optional[Schedule], typer.Option(help=f"Stage 1 learning-rate schedule: constant | cosine (to 1%) | onecycle (fastai's, with warm-up). Default: {DEFAULT_SCHEDULES['frozen']}.", show_default=False)], None),
    "finetune_schedule": (Annotated[Optional[Schedule], typer.Option(help=f"Stage 2 learning-rate schedule. Default: {DEFAULT_SCHEDULES['finetune']}.", show_default=False)], None),
    "optimizer": (Annotated[Optional[Optimizer], typer.Option(help="sgd uses Nesterov momentum 0.9. Default: adam for a new head, sgd for a baseline from scratch.", show_default=False)], DEFAULTS.optimizer),
    "batch_size": (BatchSize, DEFAULTS.batch_size),
    "image_size": (ImageSize, DEFAULTS.image_size),
    "augment": (Augment, DEFAULTS.augment),
    "flip": (FlipOption, Flip(DEFAULTS.flip)),
    "label_smoothing": (Annotated[float, typer.Option(help="Targets of 1 - X on the true class plus X / classes on every class (0.1 is usual).")], DEFAULTS.label_smoothing),
    "mixup": (Annotated[float, typer.Option(help="MixUp on training batches with Beta(A, A) weights (0.2 to 0.4 is usual); 0 = off.")], DEFAULTS.mixup),
    "cutmix": (Annotated[float, typer.Option(help="CutMix on training batches: a box of another image pasted in, its area share from Beta(A, A) (1.0 is usual); 0 = off. With --mixup, each batch gets one of the two.")], DEFAULTS.cutmix),
    "dropout": (Annotated[float, typer.Option(help="Dropout rate of the new head.")], DEFAULTS.dropout),
    "head_units": (Annotated[int, typer.Option(help="Hidden dense units in the new head; 0 for none.")], DEFAULTS.head_units),
    "val_dir": (ValDir, None),
    "val_split": (ValSplit, DEFAULTS.val_split),
    "manifest": (Annotated[Optional[Path], typer.Option(help="CSV file with columns path,label[,split] to train on instead of DATA_DIR.")], None),
    "dedupe": (Annotated[bool, typer.Option("--dedupe", help="Remove validation images that are byte-for-byte copies of training images.")], DEFAULTS.dedupe),
    "allow_split_names": (Annotated[bool, typer.Option("--allow-split-names", help="Accept class folders all named like splits (train, val, test...); refused otherwise as the folder above the splits given by mistake.")], DEFAULTS.allow_split_names),
    "class_weight": (Annotated[ClassWeight, typer.Option(help="auto: weight the loss by scikit-learn's balanced class weights.")], ClassWeight(DEFAULTS.class_weight)),
    "seed": (Seed, DEFAULTS.seed),
    "strategy": (Annotated[StrategyName, typer.Option(help="auto: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy on more than one GPU, else one device.")], StrategyName(DEFAULTS.strategy)),
    "patience": (Annotated[Optional[int], typer.Option(help="Epochs without a better validation accuracy (ties: loss) before a stage stops. Default: a third of the stage's epochs, at least 5.", show_default=False)], DEFAULTS.patience),
    "cache_features": (Annotated[bool, typer.Option(help="Frozen stage: run the backbone once per image and train the head on cached features.")], DEFAULTS.cache_features),
    "cached_views": (Annotated[int, typer.Option(help="Frozen stage with augmentation: 1 caches one unaugmented view per image (measured no worse, and cheapest), K > 1 caches K augmented views, 0 augments with the backbone in the loop every epoch.")], DEFAULTS.cached_views),
    "mixed_precision": (Annotated[bool, typer.Option("--mixed-precision", help="float16 compute with float32 weights (for GPUs with tensor cores).")], DEFAULTS.mixed_precision),
    "head": (Annotated[Optional[HeadName], typer.Option(help="logistic: the frozen stage's softmax layer fitted by scikit-learn's logistic regression (C by cross-validation) on the backbone's features; dense: trained by gradient descent. Default: logistic (measured on real pretrained features), or dense where --epochs, --mixup, --cutmix, --label-smoothing, --head-units, --lr, --schedule, --cached-views K, --no-cache-features, --tensorboard without fine-tuning, or multi-worker training need it.", show_default=False)], None),
    "cache_dir": (CacheDir, None),
    "tensorboard": (Annotated[bool, typer.Option("--tensorboard", help="Write Keras TensorBoard logs of every stage to RUN_DIR/logs (view: tensorboard --logdir RUN_DIR/logs).")], DEFAULTS.tensorboard),
}


def _with_train_options(command=None, *, without: tuple[str, ...] = ()):
    """Gives `command` the options of `TRAIN_OPTIONS` (less those `without`), after its own; they
    reach it as `**options`."""
    if command is None:
        return lambda command: _with_train_options(command, without=without)
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, (annotation, default) in TRAIN_OPTIONS.items() if name not in without
    ]
    command.__signature__ = inspect.Signature(own + added)
    command.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in added}}
    return command


def _train_options(chosen: dict) -> TrainOptions:
    """The `TrainOptions` of the command-line values of `TRAIN_OPTIONS` (choices and paths as strings)."""
    def plain(value):
        return value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value

    return TrainOptions(**{name: plain(chosen[name]) for name in TRAIN_OPTIONS if name in chosen})


@app.command()
@_with_train_options
def train(
    ctx: typer.Context,
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (nested folders are searched too).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to create.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier run written by transfer (nothing else), or discard an interrupted one.")] = False,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run RUN_DIR (its --out) with its own options.", show_default=False)] = None,
    **options,
) -> None:
    """Train a classifier on DATA_DIR (or --manifest) and write the run to --out."""
    with user_errors():
        from transfer.errors import InvalidOptionError
        from transfer.training import resume as resume_training
        from transfer.training import train as run_training

        verbose = 1 if sys.stdout.isatty() else 2  # one line per epoch in logs
        if resume is not None:
            given = [name for name in ctx.params if name != "resume" and ctx.get_parameter_source(name).name != "DEFAULT"]
            if given:
                raise InvalidOptionError(
                    f"--resume continues a run with the options it was started with; received "
                    f"{', '.join(_option_name(name) for name in given)} as well. Pass --resume RUN_DIR alone."
                )
            result = resume_training(resume, reporter=RichReporter(), verbose=verbose)
            _print_trained(result)
            return
        if out is None:
            raise InvalidOptionError("Missing --out: the run directory to create, e.g. --out runs/first.")
        result = run_training(data_dir, out, _train_options(options), force=force, reporter=RichReporter(), verbose=verbose)
    _print_trained(result)


@app.command("lr-find")
@_with_train_options
def lr_find(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (or --manifest).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for lr_find.png and lr_find.csv.", show_default=False)] = None,
    start_lr: Annotated[float, typer.Option(help="The sweep's first learning rate.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="The sweep's last learning rate.")] = 10.0,
    steps: Annotated[int, typer.Option(help="Batches in the sweep (it stops early once the loss diverges).")] = 100,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier lr-find output written by transfer (nothing else).")] = False,
    **options,
) -> None:
    """Sweep the learning rate on the model `train` would build and suggest --lr; changes no run."""
    with user_errors():
        from transfer.errors import InvalidOptionError
        from transfer.lr_find import lr_find as run_lr_find

        if out is None:
            raise InvalidOptionError("Missing --out: the folder for lr_find.png and lr_find.csv, e.g. --out lr-find.")
        found = run_lr_find(data_dir, out, _train_options(options), start_lr=start_lr, end_lr=end_lr, steps=steps,
                            force=force, reporter=RichReporter())
    results.print(f"Suggested --lr {found.suggestion:.2g} ({found.rule}; {len(found.table)} steps).", highlight=False)
    results.print(f"Plot and losses written to {found.path}/lr_find.png and {found.path}/lr_find.csv", highlight=False)


@app.command("cross-validate")
@_with_train_options(without=("backbone", "val_dir"))
def cross_validate(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (or --manifest): all of them are cross-validated.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for folds.csv, fold-K/BACKBONE runs, cv.csv, cv.json and cv.png.", show_default=False)] = None,
    folds: Annotated[int, typer.Option(help="K: stratified folds; each is held out once.")] = 5,
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones, each cross-validated on the same folds.")] = "resnet50",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier cross-validation written by transfer (nothing else).")] = False,
    **options,
) -> None:
    """Estimate accuracy, top-k and log loss by stratified K-fold: one run per fold, mean and sd."""
    with user_errors():
        from transfer.cross_validation import cross_validate as run_cross_validation
        from transfer.errors import InvalidOptionError

        if out is None:
            raise InvalidOptionError("Missing --out: the folder for the folds' runs and cv.csv, e.g. --out cv.")
        names = [name.strip() for name in backbones.split(",") if name.strip()]
        done = run_cross_validation(data_dir, out, names, _train_options(options), folds=folds, force=force,
                                    reporter=RichReporter(), verbose=1 if sys.stdout.isatty() else 2)
    top_k = f"top-{done.summary['top_k']}" if done.summary.get("top_k") else "top-k"
    numbers = [Column(name, justify="right") for name in ("folds", "accuracy", top_k, "log loss")]
    table = Table("backbone", *numbers, "failed folds", title=f"{folds}-fold cross-validation: mean +- sd over the held-out folds")
    for name, entry in done.summary["backbones"].items():
        def cell(metric):
            value = entry[metric]
            if value["mean"] is None:
                return ""
            return f"{value['mean']:.4f}" + (f" +- {value['std']:.4f}" if value["std"] is not None else "")

        failed = "; ".join(f"{f['fold']}: {f['error']}" for f in entry["failed"])
        table.add_row(name, str(entry["folds_completed"]), cell("accuracy"), cell("top_k_accuracy"), cell("log_loss"), escape(failed))
    results.print(table)
    if done.summary.get("verdict"):
        results.print(done.summary["verdict"], highlight=False)
    results.print(f"Per fold and per class: {out}/cv.csv; summary: {out}/cv.json; plot: {out}/cv.png", highlight=False)


def _option_name(parameter: str) -> str:
    return "DATA_DIR" if parameter == "data_dir" else "--" + parameter.replace("_", "-")


def _print_trained(result) -> None:
    metrics = result.metrics
    messages.print(
        f"[bold green]done[/bold green] val_accuracy {metrics['val_accuracy']:.4f}  val_loss "
        f"{metrics['val_loss']:.4f}  ({metrics['num_train']} train / {metrics['num_val']} val images, "
        f"{metrics['epochs_run']} epoch{'' if metrics['epochs_run'] == 1 else 's'}, {metrics['train_seconds']} s)",
        highlight=False,
    )
    results.print(f"Run written to {result.run_dir}", highlight=False)


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="A run directory, an export (SavedModel folder, .tflite or .onnx), or imagenet:resnet50|vgg16|inceptionv3 (the ImageNet classifier as it comes).")],
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    top_k: Annotated[Optional[int], typer.Option(help="Labels per image, most probable first. Default: min(3, classes).")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="table | csv | json on stdout (csv and json are written as each batch is scored).")] = OutputFormat.table,
    batch_size: Annotated[int, typer.Option(help="Images decoded and scored at a time.")] = 32,
    min_confidence: Annotated[Optional[float], typer.Option(help="The answer is 'unknown' where the top probability is below this. Default: the export's, else 0.", show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option(help="With imagenet:NAME: PATH to its include_top weights file. Default: downloaded by Keras.", show_default=False)] = None,
) -> None:
    """Print the top-k labels with probabilities for each image."""
    from transfer.prediction import predict as run_prediction

    printer = _PredictionPrinter(format)
    with user_errors():
        try:
            predictions = run_prediction(
                model, paths, top_k=top_k, batch_size=batch_size, min_confidence=min_confidence, weights=weights,
                reporter=RichReporter(),
            )
            for prediction in predictions:
                printer.add(prediction)
        finally:
            printer.close()  # what was scored is shown, also after Ctrl-C
    if printer.count and printer.failed == printer.count:
        _error(f"none of the {printer.count} file(s) could be read as an image (each is named above with its reason).", 1)


@app.command()
def export(
    run_dir: Annotated[str, typer.Argument(help="A run directory written by `transfer train`, or imagenet:resnet50|vgg16|inceptionv3.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the export to.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="savedmodel (TensorFlow, TF Serving; takes image bytes) | litert (.tflite) | onnx (.onnx); the last two take decoded pixels.")] = ExportFormat.savedmodel,
    quantize: Annotated[Quantization, typer.Option(help="LiteRT only: none | float16 | dynamic (int8 weights) | int8 (full integer, calibrated on the training split).")] = Quantization.none,
    min_agreement: Annotated[Optional[float], typer.Option(help="Refuse the export when its top-1 label matches the Keras model's on fewer of the validation images. Default: 0.98 for int8, 0.999 otherwise.", show_default=False)] = None,
    images: Annotated[Optional[Path], typer.Option(help="Images to check the export on (and calibrate int8 with) instead of the run's own split; required for imagenet:NAME, which has no split.", show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option(help="SavedModel: labels per image in the signature. Default: min(3, classes).")] = None,
    min_confidence: Annotated[float, typer.Option(help="The answer is 'unknown' where the top probability is below this: kept in config.json for predict and serve, and in the SavedModel's `answer` output.")] = 0.0,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export written by transfer (nothing else).")] = False,
    weights: Annotated[Optional[str], typer.Option(help="With imagenet:NAME: PATH to its include_top weights file. Default: downloaded by Keras.", show_default=False)] = None,
) -> None:
    """Write the model as a SavedModel, a LiteRT (.tflite) or an ONNX file, checked against the Keras model."""
    with user_errors():
        from transfer.export import export as run_export

        done = run_export(
            run_dir, out, format=format.value, quantize=quantize.value, top_k=top_k, min_agreement=min_agreement,
            min_confidence=min_confidence, images=images, weights=weights, force=force, reporter=RichReporter(),
        )
    results.print(
        f"{done.format}{f' ({done.quantize})' if done.quantize != 'none' else ''} export written to {done.path}: "
        f"{done.size_bytes / 1e6:.2f} MB, top-1 agreement with the Keras model {done.agreement:.4f} on {done.images_checked} "
        f"images (max probability difference {done.max_difference:.2g})",
        highlight=False,
    )


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="A run directory, an export (SavedModel, .tflite or .onnx), or imagenet:resnet50|vgg16|inceptionv3.")],
    host: Annotated[str, typer.Option(help="Address to listen on. Another than 127.0.0.1 exposes the model beyond this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (TF Serving's REST port by default).")] = 8501,
    model_name: Annotated[Optional[str], typer.Option(help="NAME in /v1/models/NAME:predict. Default: the MODEL folder's name.", show_default=False)] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(help="File holding a key every request must send ('Authorization: Bearer KEY' or 'X-API-Key: KEY').", show_default=False)] = None,
    min_confidence: Annotated[Optional[float], typer.Option(help="The answer is 'unknown' where the top probability is below this. Default: the export's, else 0.", show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Labels per image. Default: min(3, classes).", show_default=False)] = None,
    max_instances: Annotated[int, typer.Option(help="Images per request at most.")] = 64,
    max_body_mb: Annotated[float, typer.Option(help="Request body size limit in MB.")] = 16.0,
    weights: Annotated[Optional[str], typer.Option(help="With imagenet:NAME: PATH to its include_top weights file. Default: downloaded by Keras.", show_default=False)] = None,
) -> None:
    """Serve the model over HTTP with TF Serving's REST predict API, and a page to try it on."""
    with user_errors():
        from transfer.serving import ServerOptions, serve as run_server

        options = ServerOptions(
            host=host, port=port, model_name=model_name, api_key_file=api_key_file, min_confidence=min_confidence,
            top_k=top_k, max_instances=max_instances, max_body_mb=max_body_mb,
        )
        run_server(model, options, weights=weights, reporter=RichReporter())


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A run directory or an export (SavedModel folder, .tflite or .onnx).")],
    data_dir: Annotated[Path, typer.Argument(help="Folder with one subfolder of labelled images per class.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for metrics, confusion matrix and errors. Default: RUN/evaluation, or NAME-evaluation beside an export.", show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option(help="k of the top-k accuracy. Default: min(3, classes).")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average the softmax over 5 crops and their mirror images (multi-crop testing).")] = False,
    batch_size: Annotated[int, typer.Option(help="Images decoded and scored at a time.")] = 32,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier evaluation written by transfer (nothing else).")] = False,
) -> None:
    """Accuracy, top-k, log loss, per-class precision/recall/F1, confusion matrix and errors on DATA_DIR."""
    with user_errors():
        from transfer.evaluation import evaluate_folder

        evaluation, path = evaluate_folder(model, data_dir, out, top_k=top_k, tta=tta, batch_size=batch_size, force=force, reporter=RichReporter())
    s = evaluation.summary
    numbers = [Column(name, justify="right") for name in ("precision", "recall", "f1", "support")]
    table = Table("class", *numbers, title=(
        f"accuracy {s['accuracy']:.4f}   top-{s['top_k']} {s['top_k_accuracy']:.4f}   log loss {s['log_loss']:.4f}"
        f"   ({s['num_images']} images, TTA {'on' if s['tta'] else 'off'})"
    ))
    for name, row in evaluation.per_class.iterrows():
        table.add_row(str(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(int(row["support"])))
    results.print(table)
    for row in evaluation.skipped.itertuples():
        messages.print(f"[yellow]skipped {escape(f'{row.path}: {row.reason}')}[/yellow]", highlight=False)
    results.print(f"Metrics, confusion matrix and errors written to {path}", highlight=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `transfer train`.")],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="HTML file to write, or a folder (ending in /) to write report.html into. Default: RUN_DIR/report.html.", show_default=False)] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Evaluate with multi-crop test-time augmentation.")] = False,
    errors: Annotated[int, typer.Option(help="How many of the most confident errors to show.")] = 12,
    gradcam: Annotated[int, typer.Option(help="How many validation images to show Grad-CAM heatmaps for.")] = 8,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier report written by transfer (nothing else).")] = False,
) -> None:
    """Write one self-contained report.html: config, data, curves, metrics, errors, Grad-CAM."""
    with user_errors():
        from transfer.report import report as write_report

        path = write_report(run_dir, out, tta=tta, errors=errors, gradcam=gradcam, force=force, reporter=RichReporter())
    results.print(f"Report written to {path}", highlight=False)


@app.command()
def visualize(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `transfer train`.")],
    image: Annotated[Optional[Path], typer.Option(help="Image for the feature maps. Default: the run's first validation image.", show_default=False)] = None,
    layers: Annotated[Optional[str], typer.Option(help="Comma-separated backbone layers for feature maps. Default: the first and last convolutions.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder to write to. Default: RUN_DIR/visualize.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier visualization written by transfer (nothing else).")] = False,
) -> None:
    """Write the first convolution's filters and feature maps of chosen layers as PNG grids."""
    with user_errors():
        from transfer.visualize import visualize as run_visualize

        names = [name.strip() for name in layers.split(",") if name.strip()] if layers else []
        paths = run_visualize(run_dir, out, image=image, layers=names, force=force)
    for path in paths:
        results.print(f"wrote {path}", highlight=False)


@app.command()
@_with_train_options(without=("backbone",))
def compare(
    data_dir: Annotated[Path, typer.Argument(help="Folder with one subfolder of images per class.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the runs, leaderboard.csv and leaderboard.png.")],
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones to train on the same split: registry names, PATH.keras files, keras-hub:PRESET.")] = ",".join(BACKBONES),
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier comparison written by transfer (nothing else).")] = False,
    **options,
) -> None:
    """Train several backbones on one split, evaluate each, and write a leaderboard."""
    with user_errors():
        from transfer.compare import compare as run_compare

        chosen = _train_options(options)
        names = [name.strip() for name in backbones.split(",") if name.strip()]
        leaderboard = run_compare(data_dir, out, names, chosen, val_dir=chosen.val_dir, force=force,
                                  reporter=RichReporter(), verbose=1 if sys.stdout.isatty() else 2)
    numbers = [Column(name, justify="right") for name in ("parameters", "trainable", "val acc", "top-3", "train s", "images/s")]
    table = Table("backbone", "mode", *numbers, "error")
    for row in leaderboard.itertuples():
        failed = bool(row.error)
        table.add_row(
            row.backbone, row.mode, "" if failed else f"{row.parameters:,}", "" if failed else f"{row.trainable_parameters:,}",
            "" if failed else f"{row.val_accuracy:.4f}", "" if failed else f"{row.top3_accuracy:.4f}",
            "" if failed else f"{row.train_seconds:.0f}", "" if failed else f"{row.images_per_second:.1f}", row.error or "",
        )
    results.print(table)
    if leaderboard.attrs.get("verdict"):
        results.print(leaderboard.attrs["verdict"], highlight=False)
    results.print(f"Leaderboard written to {out}/leaderboard.csv and {out}/leaderboard.png", highlight=False)


@app.command()
def features(
    model: Annotated[str, typer.Argument(help="A run directory, imagenet:resnet50|vgg16|inceptionv3 (the backbone without its top), a Keras model file PATH.keras or keras-hub:PRESET.")],
    data_dir: Annotated[Path, typer.Argument(help="Folder with one subfolder of images per class.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Parquet file to write (.parquet): path, label, f0000, f0001, ...; or a folder (ending in /) to write features.parquet into.")],
    weights: Annotated[Optional[str], typer.Option(help="With imagenet:NAME: PATH to its weights file without top. Default: downloaded by Keras.", show_default=False)] = None,
    preprocess: Annotated[Optional[PreprocessMode], typer.Option(help="With PATH.keras: none (the model preprocesses raw RGB in [0, 255] itself) | caffe | tf | torch. Default: none.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Images decoded and scored at a time.")] = 32,
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier features file written by transfer (nothing else).")] = False,
) -> None:
    """Write each image's pooled backbone features as Parquet, for pandas and scikit-learn."""
    with user_errors():
        from transfer.feature_files import write_features

        table = write_features(model, data_dir, out, weights=weights, preprocess=preprocess.value if preprocess else None, batch_size=batch_size, cache_dir=cache_dir,
                               force=force, reporter=RichReporter())
    for row in table.attrs["skipped"].itertuples():
        messages.print(f"[yellow]skipped {escape(f'{row.path}: {row.reason}')}[/yellow]", highlight=False)
    width = sum(column.startswith("f") for column in table.columns)
    results.print(f"{len(table)} images x {width} features written to {table.attrs['path']}", highlight=False)


@app.command()
def backbones() -> None:
    """List the backbones: input size, parameters and pretrained weights file."""
    with user_errors():
        from transfer.backbones import describe_all

        rows = describe_all()
    table = Table("backbone", "input", "parameters", "pretrained weights file")
    for row in rows:
        table.add_row(row["name"], row["input"], f"{row['parameters']:,} {row['counted']}", row["weights_file"])
    results.print(table)
    results.print("Any Keras model file (--backbone PATH.keras) or keras-hub preset (--backbone keras-hub:PRESET) works too; see the README.", highlight=False)


@app.command()
def dataset(
    name: Annotated[DatasetName, typer.Argument(help="Built-in dataset.")],
    out: Annotated[Path, typer.Argument(help="New or empty folder to write the class subfolders into.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier dataset written by transfer (nothing else).")] = False,
) -> None:
    """Write a built-in dataset as an image folder (no network needed)."""
    with user_errors():
        from transfer.datasets import write_dataset

        path = write_dataset(name.value, out, force=force)
    count = sum(1 for _ in Path(path).rglob("*.png"))
    results.print(f"{name.value}: {count} images in {path}", highlight=False)


class _PredictionPrinter:
    """Predictions on stdout as they come (csv, json) or as one table at the end; every file that
    was not scored is also named on stderr with the reason."""

    def __init__(self, format: OutputFormat):
        self.format, self.count, self.failed, self.rows = format, 0, 0, []
        self.writer = csv.writer(sys.stdout, lineterminator="\n")  # LF, as every other CSV file written here

    def add(self, p) -> None:
        """Prints one prediction; the CSV header comes with the first, so a command that fails
        before any image is scored leaves stdout empty."""
        self.count += 1
        if self.format is OutputFormat.csv and self.count == 1:
            self.writer.writerow(["path", "rank", "label", "probability", "answer", "error"])
        if p.error is not None:
            self.failed += 1
            messages.print(f"[yellow]skipped {escape(f'{p.path}: {p.error}')}[/yellow]", highlight=False)
        if self.format is OutputFormat.csv:
            if p.error is not None:
                self.writer.writerow([p.path, "", "", "", "", p.error])
            for rank, (label, probability) in enumerate(zip(p.labels, p.probabilities), start=1):
                self.writer.writerow([p.path, rank, label, f"{probability:.6f}", p.answer, ""])
            sys.stdout.flush()
        elif self.format is OutputFormat.json:
            print(("[\n" if self.count == 1 else ",\n") + _indented(json.dumps(p.to_dict(), indent=2)), end="", flush=True)
        else:
            self.rows.append(p)

    def close(self) -> None:
        """Ends the output: the JSON list is closed where one was opened (nothing is printed when no
        image was scored: the command failed before)."""
        if self.format is OutputFormat.json and self.count:
            print("\n]", flush=True)
        elif self.format is OutputFormat.table and any(p.error is None for p in self.rows):
            k = max((len(p.labels) for p in self.rows), default=0)
            from transfer.prediction import UNKNOWN

            unknown = any(p.answer == UNKNOWN for p in self.rows)  # the answer column is shown where it differs
            table = Table("image", *(["answer"] if unknown else []), *[f"#{rank}" for rank in range(1, k + 1)])
            for p in self.rows:
                cells = [escape(f"{label} {probability:.1%}") for label, probability in zip(p.labels, p.probabilities)]
                answer = [escape(p.answer or "")] if unknown else []
                table.add_row(escape(p.path), *(answer + cells if cells else [f"[red]{escape(p.error)}[/red]"]))
            results.print(table)


def _indented(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


if __name__ == "__main__":
    app()
