"""`transfer cross-validate`: stratified K-fold estimates of accuracy, top-k and log loss.

On a few hundred images one validation split is a noisy judge. Here every usable image of the data
is put in one of K folds (scikit-learn's `StratifiedKFold`, shuffled with the seed, so each fold
has about the same share of every class). For each fold and backbone, `transfer train` runs on the
other K - 1 folds, holding out its usual `--val-split` of them for early stopping and for choosing
the epoch and stage it keeps, and the held-out fold, which that run never saw, is evaluated
(`transfer.evaluation.evaluate`, written to the run's `evaluation/`). The estimate is the mean and
sample standard deviation (ddof 1) over the folds of accuracy, top-k accuracy, log loss and each
class's recall, per backbone.

Byte-for-byte copies of an image always share its fold, so no held-out image is a copy of a training
one. Folds share the feature cache: the frozen backbone is the same in every fold (ImageNet weights,
or a seeded initialization), so each image's pooled features are computed once. A fold that fails
is reported with the reason and the others still run; weights that cannot be loaded fail once per
backbone, not once per fold. Ctrl-C stops the whole cross-validation and writes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from transfer.outputs import artifacts, layout, publishing
from transfer.models.registry import backbone_folder
from transfer.selection.compare import transfer_verdict
from transfer.core.errors import (
    CrossValidationFailedError, DataError, InvalidOptionError, TrainingInterrupted, TransferError, WeightsUnavailableError,
)
from transfer.selection.experiments import Experiment, require_some_success
from transfer.training.options import TrainOptions
from transfer.core.errors import require
from transfer.outputs.figures import plot_cross_validation
from transfer.core.progress import SILENT, Reporter
from transfer.training.option_fields import flag

METRICS = ("accuracy", "top_k_accuracy", "log_loss")
#: A multi-label model's, ranked by the first: mean average precision, exact label sets, micro F1, log loss.
MULTI_LABEL_METRICS = ("mean_average_precision", "exact_match", "micro_f1", "log_loss")


@dataclass(frozen=True)
class CrossValidationResult:
    """`table`: one row per backbone and fold (`cv.csv`); `summary`: what `cv.json` holds."""

    table: pd.DataFrame
    summary: dict
    path: Path


def cross_validate(
    data_dir: Path | None,
    out_dir: Path,
    backbones: Sequence[str] | None = None,
    options: TrainOptions = TrainOptions(),
    *,
    folds: int = 5,
    force: bool = False,
    reporter: Reporter = SILENT,
    verbose: int | str = 0,
) -> CrossValidationResult:
    """Cross-validates each of `backbones` (default: `options.backbone`, or resnet50) on `data_dir`
    (or `options.manifest`, whose split column is then not used) with `options`.

    Raises:
        TransferError: bad options or data, or an output that cannot be written: nothing is written.
        CrossValidationFailedError: every fold failed (the results, with the reasons, are written).
    """
    backbones = list(backbones or [options.backbone or "resnet50"])
    experiment = Experiment(
        "cross-validation", Path(out_dir), options, force, reporter, discarded="the unfinished folds' runs",
        again="Run the command again: the images' features are in the feature cache, so the frozen stages start faster.",
    )
    require(isinstance(folds, int) and folds >= 2, "--folds", folds, "an integer >= 2")
    if options.val_dir:
        raise InvalidOptionError(
            f"Received {flag.val_dir} {options.val_dir}; cross-validation holds out each fold in turn from DATA_DIR. Put "
            f"all the labelled images in DATA_DIR (or run `transfer evaluate` on the validation folder)."
        )
    experiment.check_backbones(backbones, layout.FOLDS_CSV)  # every option checked before any image is read
    folder = experiment.prepare_data(data_dir, forget_split=True)  # the runs read a manifest of the usable images only
    images = images_in_folds(folder, folds, options.seed, reporter)
    reporter.message(
        f"{len(images)} images in {folds} stratified folds of {', '.join(str(n) for n in np.bincount(images['fold'])[1:])}; "
        f"each run trains on the other folds (holding out {options.val_split:g} of them for early stopping) and is "
        f"evaluated on its own."
    )
    with experiment.staged() as staging:
        table, summary = _run_folds(staging, experiment.out_dir, images, folder=folder, backbones=backbones,
                                    options=options, reporter=reporter, verbose=verbose)
    require_some_success(table, CrossValidationFailedError, "Every fold failed",
                         f"The results, with the reasons, are in {experiment.out_dir}.",
                         reasons=lambda rows: [rows["error"].iloc[0]])  # the folds of a backbone fail alike
    return CrossValidationResult(table, summary, experiment.out_dir)


def _run_folds(staging: Path, out_dir: Path, images: pd.DataFrame, *, folder, backbones: list[str], options: TrainOptions,
               reporter: Reporter, verbose: int | str) -> tuple[pd.DataFrame, dict]:
    """Every backbone on every fold (`images`' `fold`), written in `staging`, the staging folder of `out_dir`."""
    folds = int(images["fold"].max())
    cv = artifacts.CrossValidation(staging)
    publishing.write_table(cv.folds_file, artifacts.as_manifest(images, folder.multi_label))
    publishing.write_table(staging / layout.SKIPPED, folder.skipped)
    rows, unusable = [], {}  # backbone -> why it cannot run at all (its weights)
    metrics = metrics_of(folder)
    for fold in range(1, folds + 1):
        cv.fold_dir(fold).mkdir()
        publishing.write_table(cv.manifest(fold), artifacts.as_manifest(images.loc[images["fold"] != fold, ["path", "label"]], folder.multi_label))
        held_out = images.loc[images["fold"] == fold, ["path", "label"]]
        for name in backbones:
            if name in unusable:  # the same weights would fail the same way: not tried again
                rows.append(_row(cv, fold, name, held_out, folder) | {"error": unusable[name]})
                continue
            reporter.message(f"== fold {fold}/{folds}: {name} ({len(images) - len(held_out)} images to train on, {len(held_out)} held out) ==")
            row = _run_fold(cv, fold, name, options=options, held_out=held_out, folder=folder, reporter=reporter,
                            verbose=verbose)
            if row.pop("weights_failed"):
                unusable[name] = f"not run: {row['error']}"
            rows.append(row)
    table = pd.DataFrame(rows)
    summary = summarize(table, folder.class_names, metrics) | {
        "folds": folds, "seed": options.seed, "data": folder.source, "num_images": len(images), "metrics": list(metrics),
        "top_k": _top_k(table), "options": {name: dataclasses.asdict(options.for_backbone(name, cv.manifest(1)).resolved())
                                            for name in backbones},
    }
    summary["verdict"] = transfer_verdict({
        name: (options.for_backbone(name, cv.manifest(1)).transfers, entry[metrics[0]]["mean"])
        for name, entry in summary["backbones"].items()
    })
    plot_cross_validation(table, cv.path / layout.CV_PNG, metrics[0])
    cv.write_results(table, summary)
    cv.relocate_runs(out_dir)
    return table, summary


def images_in_folds(folder, folds: int, seed: int, reporter: Reporter = SILENT,
                    columns: Sequence[str] = ("path", "label")) -> pd.DataFrame:
    """The usable images of `folder` (`columns`), sorted by path, each with its `fold`
    (`assign_folds`: byte-for-byte copies, found by content, share one), the copies said."""
    images = folder.examples[list(columns)].sort_values("path", kind="stable").reset_index(drop=True)
    contents = [publishing.sha256(path) for path in images["path"]]
    images["fold"] = assign_folds(images["label"], folds, seed, groups=contents, multi_label=folder.multi_label)
    copies = len(contents) - len(set(contents))
    if copies:
        reporter.message(f"{copies} image(s) are byte-for-byte copies of others; each set of copies is kept in one fold.")
    return images


def assign_folds(labels: pd.Series, folds: int, seed: int, groups: Sequence | None = None, multi_label: bool = False) -> np.ndarray:
    """The fold (1..`folds`) of each image: stratified by label, shuffled with `seed`; images of the
    same group (the same content: byte-for-byte copies) always share a fold, so no held-out image
    is a copy of one trained on (scikit-learn's `StratifiedGroupKFold`, stratified as far as the
    groups allow).

    Multi-label images (`multi_label`: each label a set joined by `;`) are stratified label by label
    (iterative stratification, `iterstrat`'s `MultilabelStratifiedKFold`), a set of copies as one.

    Raises:
        DataError: a class has too few images for every fold to hold one and every run to train
            and stop early on it.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if multi_label:
        return _assign_multi_label_folds(labels, folds, seed, groups)
    counts = labels.value_counts()
    needed = max(folds, 3)  # a run needs 2 images of each class in its part (1 to train, 1 to validate)
    small = counts[counts < needed]
    if len(small):
        raise DataError(
            f"--folds {folds} needs at least {needed} usable images of each class; "
            + ", ".join(f"{name} has {count}" for name, count in small.sort_index().items())
            + ". Add images, or lower --folds."
        )
    assigned = np.zeros(len(labels), dtype=int)
    groups = np.arange(len(labels)) if groups is None else pd.factorize(pd.Series(list(groups)))[0]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels.to_numpy(), groups), start=1):
        assigned[held_out] = fold
    return assigned


def _assign_multi_label_folds(labels: pd.Series, folds: int, seed: int, groups: Sequence | None) -> np.ndarray:
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    from transfer.metrics.multilabel import multi_hot
    from transfer.metrics.multilabel import split_labels

    names = sorted({label for joined in labels for label in split_labels(joined)})
    targets = multi_hot(labels.reset_index(drop=True), names)
    counts = targets.sum(axis=0)
    needed = max(folds, 3)
    small = [(name, int(count)) for name, count in zip(names, counts) if count < needed]
    if small:
        raise DataError(f"--folds {folds} needs at least {needed} images of each label; "
                        + ", ".join(f"{name} has {count}" for name, count in small) + ". Add images, or lower --folds.")
    group_of = np.arange(len(labels)) if groups is None else pd.factorize(pd.Series(list(groups)))[0]
    per_group = pd.DataFrame(targets).groupby(group_of).max()  # a set of copies carries every label any copy has
    assigned = np.zeros(len(per_group), dtype=int)
    splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(per_group)), per_group.to_numpy()), start=1):
        assigned[held_out] = fold
    return pd.Series(assigned, index=per_group.index).loc[group_of].to_numpy()


def summarize(table: pd.DataFrame, class_names: list[str], metrics: Sequence[str] = METRICS) -> dict:
    """Mean and sample standard deviation over the successful folds, per backbone: of each metric
    and of each class's recall; the failed folds with their reasons."""
    summary = {"backbones": {}}
    for name, rows in table.groupby("backbone", sort=False):
        ok = rows[~rows["error"].astype(bool)]
        entry = {"folds_completed": len(ok), "failed": [
            {"fold": int(row.fold), "error": row.error} for row in rows.itertuples() if row.error
        ]}
        for metric in metrics:
            entry[metric] = _mean_std(ok[metric])
        entry["per_class_recall"] = {label: _mean_std(ok[f"recall:{label}"]) for label in class_names}
        summary["backbones"][name] = entry
    return summary


def _mean_std(values: pd.Series) -> dict:
    values = values.astype(float).to_numpy()
    mean = float(np.mean(values)) if len(values) else math.nan
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return {"mean": None if math.isnan(mean) else mean, "std": None if math.isnan(std) else std}


def metrics_of(folder) -> tuple[str, ...]:
    """The metrics cross-validated on `folder`'s data, the one that ranks first."""
    return MULTI_LABEL_METRICS if folder.multi_label else METRICS


def _run_fold(cv: artifacts.CrossValidation, fold: int, name: str, *, options: TrainOptions, held_out: pd.DataFrame,
              folder, reporter: Reporter, verbose: int | str) -> dict:
    """The `cv.csv` row of one backbone on one fold: trained on the other folds, evaluated on this one."""
    import keras

    from transfer.evaluation.evaluate import evaluate, evaluation_pictures
    from transfer.training.train import train

    row = _row(cv, fold, name, held_out, folder) | {"weights_failed": False}
    class_names, metrics = folder.class_names, metrics_of(folder)
    try:
        result = train(None, cv.run_dir(fold, backbone_folder(name)), options.for_backbone(name, cv.manifest(fold)),
                       reporter=reporter, verbose=verbose)
        evaluation = evaluate(result.run_dir, held_out, reporter=reporter)
        artifacts.write_evaluation(evaluation, result.run_dir / layout.EVALUATION, draw=evaluation_pictures(evaluation))
        recall = evaluation.per_class["recall"]
        return row | {
            "num_train": result.metrics["num_train"], "top_k": evaluation.summary.get("top_k"),
            **{metric: evaluation.summary[metric] for metric in metrics},
            **{f"recall:{label}": float(recall[label]) for label in class_names},
            "train_seconds": result.metrics["train_seconds"],
        }
    except TrainingInterrupted:
        raise  # Ctrl-C stops the cross-validation, not only this fold
    except TransferError as error:
        reporter.warning(f"fold {fold}, {name} failed: {error}")
        return row | {"error": str(error).splitlines()[0], "weights_failed": isinstance(error, WeightsUnavailableError)}
    finally:
        keras.backend.clear_session()


def _row(cv: artifacts.CrossValidation, fold: int, name: str, held_out: pd.DataFrame, folder) -> dict:
    """A `cv.csv` row with nothing measured yet."""
    class_names, metrics = folder.class_names, metrics_of(folder)
    return {"backbone": name, "fold": fold, "num_train": None, "num_held_out": len(held_out), "top_k": None,
            **dict.fromkeys(metrics), **{f"recall:{label}": None for label in class_names},
            "train_seconds": None, "run_dir": str(cv.run_dir(fold, backbone_folder(name)).relative_to(cv.path)), "error": ""}


def _top_k(table: pd.DataFrame) -> int | None:
    """The k of the top-k accuracy (the same for every fold: min(3, classes))."""
    values = table["top_k"].dropna()
    return int(values.iloc[0]) if len(values) else None
