"""The commands that train or fit: `train`, `lr-find`, `cross-validate`, `audit`, `compare`, `probe`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from transfer.models.registry import BACKBONES
from transfer.cli.app import app, results, user_errors
from transfer.cli.parameters import option_name, train_options_of, with_train_options
from transfer.cli.printers import RichReporter, print_audit, print_cross_validation, print_leaderboard, print_probe, print_trained


@app.command()
@with_train_options("train")
def train(
    ctx: typer.Context,
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (nested folders are searched too).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to create.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier run written by transfer (nothing else), or discard an interrupted one.")] = False,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run RUN_DIR (its --out) with its own options.", show_default=False)] = None,
    **options,
) -> None:
    """Train a classifier on a folder of images.

    Trains on DATA_DIR (one subfolder per class) or --manifest and writes the run to --out.

    Example: transfer train photos/ --out runs/photos
    """
    with user_errors():
        from transfer.core.errors import InvalidOptionError
        from transfer.selection.probe import train_auto
        from transfer.training.train import resume as resume_training

        verbose = 1 if sys.stdout.isatty() else 2  # one line per epoch in logs
        if resume is not None:
            given = [name for name in ctx.params if name != "resume" and ctx.get_parameter_source(name).name != "DEFAULT"]
            if given:
                raise InvalidOptionError(
                    f"--resume continues a run with the options it was started with; received "
                    f"{', '.join(option_name(name) for name in given)} as well. Pass --resume RUN_DIR alone."
                )
            result = resume_training(resume, reporter=RichReporter(), verbose=verbose)
            print_trained(result)
            return
        if out is None:
            raise InvalidOptionError("Missing --out: the run directory to create, e.g. --out runs/first.")
        result = train_auto(data_dir, out, train_options_of(options), force=force, reporter=RichReporter(), verbose=verbose)
    print_trained(result)


@app.command("lr-find")
@with_train_options("lr-find")
def lr_find(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (or --manifest).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for lr_find.png and lr_find.csv.", show_default=False)] = None,
    start_lr: Annotated[float, typer.Option(help="The sweep's first learning rate.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="The sweep's last learning rate.")] = 10.0,
    steps: Annotated[int, typer.Option(help="Batches in the sweep (it stops early once the loss diverges).")] = 100,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier lr-find output written by transfer (nothing else).")] = False,
    **options,
) -> None:
    """Sweep the learning rate and suggest --lr.

    Sweeps the learning rate on the model `train` would build; changes no run.

    Example: transfer lr-find photos/ --out runs/lr
    """
    with user_errors():
        from transfer.core.errors import InvalidOptionError
        from transfer.training.lr_find import lr_find as run_lr_find

        if out is None:
            raise InvalidOptionError("Missing --out: the folder for lr_find.png and lr_find.csv, e.g. --out lr-find.")
        found = run_lr_find(data_dir, out, train_options_of(options), start_lr=start_lr, end_lr=end_lr, steps=steps,
                            force=force, reporter=RichReporter())
    results.print(f"Suggested --lr {found.suggestion:.2g} ({found.rule}; {len(found.table)} steps).", highlight=False)
    results.print(f"Plot and losses written to {found.path}/lr_find.png and {found.path}/lr_find.csv", highlight=False)


@app.command("cross-validate")
@with_train_options("cross-validate")
def cross_validate(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (or --manifest): all of them are cross-validated.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for folds.csv, fold-K/BACKBONE runs, cv.csv, cv.json and cv.png.", show_default=False)] = None,
    folds: Annotated[int, typer.Option(help="K: stratified folds; each is held out once.")] = 5,
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones, each cross-validated on the same folds.")] = "resnet50",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier cross-validation written by transfer (nothing else).")] = False,
    **options,
) -> None:
    """Estimate accuracy by K-fold cross-validation.

    Accuracy, top-k and log loss by stratified K-fold: one run per fold, mean and sd.

    Example: transfer cross-validate photos/ --folds 5 --out runs/cv
    """
    with user_errors():
        from transfer.selection.cross_validation import cross_validate as run_cross_validation
        from transfer.core.errors import InvalidOptionError

        if out is None:
            raise InvalidOptionError("Missing --out: the folder for the folds' runs and cv.csv, e.g. --out cv.")
        names = [name.strip() for name in backbones.split(",") if name.strip()]
        done = run_cross_validation(data_dir, out, names, train_options_of(options), folds=folds, force=force,
                                    reporter=RichReporter(), verbose=1 if sys.stdout.isatty() else 2)
    print_cross_validation(done.summary, folds)
    results.print(f"Per fold and per class: {out}/cv.csv; summary: {out}/cv.json; plot: {out}/cv.png", highlight=False)


@app.command()
@with_train_options("audit")
def audit(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (or --manifest): every image is audited.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for audit.csv, audit.html, clean.csv and out_of_fold.csv.", show_default=False)] = None,
    folds: Annotated[int, typer.Option(help="K: each image is judged by the model fitted on the other K - 1 folds.")] = 5,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier audit written by transfer (nothing else).")] = False,
    **options,
) -> None:
    """Find wrong labels, duplicates and outliers.

    Judges every image by a model that never saw it (K-fold), and lists the labels to check (cleanlab), near-duplicate pairs and outliers; the data is not changed.

    Example: transfer audit photos/ --out runs/audit
    """
    with user_errors():
        from transfer.selection.audit import audit as run_audit
        from transfer.core.errors import InvalidOptionError

        if out is None:
            raise InvalidOptionError("Missing --out: the folder for audit.csv, audit.html and clean.csv, e.g. --out audit.")
        done = run_audit(data_dir, out, train_options_of(options), folds=folds, force=force,
                         reporter=RichReporter(), verbose=1 if sys.stdout.isatty() else 2)
    print_audit(done)


@app.command()
@with_train_options("compare")
def compare(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (or --manifest).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the runs, leaderboard.csv and leaderboard.png.", show_default=False)] = None,
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones to train on the same split: registry names, PATH.keras files, keras-hub:PRESET.")] = ",".join(BACKBONES),
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier comparison written by transfer (nothing else).")] = False,
    **options,
) -> None:
    """Rank several backbones trained on one split.

    Trains each backbone on the same split, evaluates it, and writes a leaderboard.

    Example: transfer compare photos/ --backbones resnet50,lenet --out runs/compare
    """
    with user_errors():
        from transfer.selection.compare import compare as run_compare
        from transfer.core.errors import InvalidOptionError

        if out is None:
            raise InvalidOptionError("Missing --out: the folder for the runs and leaderboard.csv, e.g. --out compare.")
        chosen = train_options_of(options)
        names = [name.strip() for name in backbones.split(",") if name.strip()]
        leaderboard = run_compare(data_dir, out, names, chosen, force=force,
                                  reporter=RichReporter(), verbose=1 if sys.stdout.isatty() else 2)
    print_leaderboard(leaderboard)
    results.print(f"Leaderboard written to {out}/leaderboard.csv and {out}/leaderboard.png", highlight=False)


@app.command()
@with_train_options("probe")
def probe(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of images per class (or --manifest); --val-dir images join them.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for probe.csv, probe.png and config.json (and curve.csv, curve.png).", show_default=False)] = None,
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones to rank: registry names, PATH.keras files, keras-hub:PRESET.")] = ",".join(BACKBONES),
    folds: Annotated[int, typer.Option(help="K of the probe's stratified cross-validation.")] = 5,
    curve: Annotated[bool, typer.Option("--curve", help="Also the data-efficiency curve: the probe on 1, 2, 5, 10, 20, ... training images per class, scored on the held-out images (--val-dir, or --val-split of each class).")] = False,
    draws: Annotated[Optional[int], typer.Option(help="With --curve: random draws of each subset size. Default: 5.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier probe written by transfer (nothing else).")] = False,
    **options,
) -> None:
    """Rank backbones in minutes on frozen features.

    One pass per backbone (cached), then a cross-validated linear probe and LogME; --curve says whether more images would help.

    Example: transfer probe photos/ --backbones resnet50,vgg16 --out runs/probe
    """
    with user_errors():
        from transfer.core.errors import InvalidOptionError
        from transfer.selection.probe import probe as run_probe

        if out is None:
            raise InvalidOptionError("Missing --out: the folder for probe.csv and probe.png, e.g. --out probe.")
        if draws is not None and not curve:
            raise InvalidOptionError(f"Received --draws {draws} without --curve; the draws are the curve's. Add --curve, or drop --draws.")
        names = [name.strip() for name in backbones.split(",") if name.strip()]
        done = run_probe(data_dir, out, names, train_options_of(options), folds=folds, curve_draws=(5 if draws is None else draws) if curve else None,
                         force=force, reporter=RichReporter())
    print_probe(done)
