"""`transfer compare`: several backbones trained and evaluated on the same split, side by side.

The data is listed, checked and split once; the split is written as a manifest (`split.csv`) and
every backbone trains from it (`--manifest`), with the same seed and the same epoch budget, into
`OUT/runs/NAME`. Each is then evaluated on the same validation images. A backbone that fails (for
example, ImageNet weights that cannot be downloaded) gets a leaderboard row with the reason, and
the others still run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from transfer.outputs import artifacts, layout
from transfer.models.registry import backbone_folder, get_backbone
from transfer.core.errors import ComparisonFailedError, TrainingInterrupted, TransferError
from transfer.evaluation.evaluate import evaluate
from transfer.training.options import TrainOptions
from transfer.outputs.figures import plot_leaderboard
from transfer.core.progress import SILENT, Reporter
from transfer.selection.experiments import Experiment, require_some_success
from transfer.training.train import train

COLUMNS = [
    "backbone", "mode", "parameters", "trainable_parameters", "val_accuracy", "top3_accuracy", "val_map",
    "train_seconds", "images_per_second", "run_dir", "error",
]


def compare(
    data_dir: Path,
    out_dir: Path,
    backbones: Sequence[str],
    options: TrainOptions = TrainOptions(),
    *,
    force: bool = False,
    reporter: Reporter = SILENT,
    verbose: int | str = "auto",
) -> pd.DataFrame:
    """Trains and evaluates each of `backbones` on one split of `data_dir`; writes the leaderboard.

    `options` apply to every backbone, except that baselines always start from random weights and
    train in one stage; an unset `weights` or `image_size` takes each backbone's default.

    The comparison is written in a staging folder and published when every backbone has had its
    turn, so an earlier comparison stays as it was until then.

    Returns:
        The leaderboard, best validation accuracy first (failed runs last).

    Raises:
        ComparisonFailedError: every backbone failed (the leaderboard, with the reasons, is written).
    """
    options = dataclasses.replace(options, refit=False)  # every backbone is measured on the same validation images, which train none
    experiment = Experiment("comparison", Path(out_dir), options, force, reporter, discarded="the unfinished runs",
                            again="Run the command again to compare.")
    experiment.check_backbones(backbones, layout.SPLIT)  # every option checked before any training
    folder = experiment.prepare_data(data_dir)  # the runs read a manifest of the usable images only
    with experiment.staged() as staging:
        leaderboard = _compare_all(staging, experiment.out_dir, folder, backbones=backbones, options=options,
                                   reporter=reporter, verbose=verbose)
    require_some_success(leaderboard, ComparisonFailedError, "Every backbone failed",
                         f"The leaderboard with the reasons is in {experiment.out_dir}.")
    return leaderboard


def transfer_verdict(scores: dict[str, tuple[bool, float | None]]) -> str | None:
    """One plain sentence on whether transfer helped, where both sides were trained: `scores` maps
    each backbone to (whether it was transferred, its accuracy); `None` without both sides."""
    done = {name: (transferred, accuracy) for name, (transferred, accuracy) in scores.items() if accuracy is not None}
    transferred = {name: accuracy for name, (moved, accuracy) in done.items() if moved}
    scratch = {name: accuracy for name, (moved, accuracy) in done.items() if not moved}
    if not transferred or not scratch:
        return None
    best_transferred, best_scratch = max(transferred, key=transferred.get), max(scratch, key=scratch.get)
    if scratch[best_scratch] > transferred[best_transferred]:
        return (
            f"Transfer hurt here: {best_scratch} trained from scratch ({scratch[best_scratch]:.3f}) beat every transferred "
            f"backbone (best: {best_transferred}, {transferred[best_transferred]:.3f}) on the same images."
        )
    return (
        f"Transfer helped here: {best_transferred} ({transferred[best_transferred]:.3f}) against the best from scratch, "
        f"{best_scratch} ({scratch[best_scratch]:.3f})."
    )


def _compare_all(staging: Path, out_dir: Path, folder, *, backbones: Sequence[str], options: TrainOptions,
                 reporter: Reporter, verbose: int | str) -> pd.DataFrame:
    """Every backbone on the comparison's split, written in `staging`, the staging folder of `out_dir`."""
    comparison = artifacts.Comparison(staging)
    comparison.write_data(folder)
    rows = [_train_one(comparison, name, options, folder, reporter=reporter, verbose=verbose) for name in backbones]
    leaderboard = pd.DataFrame(rows, columns=COLUMNS).astype({"parameters": "Int64", "trainable_parameters": "Int64"})
    rank_by = "val_map" if folder.multi_label else "val_accuracy"  # multi-label: mean average precision
    leaderboard = leaderboard.sort_values(rank_by, ascending=False, na_position="last", kind="stable")
    leaderboard = leaderboard.reset_index(drop=True)
    leaderboard["run_dir"] = [  # a failed backbone left no run: its run_dir is blank
        "" if error else str(artifacts.Comparison(out_dir).run_dir(backbone_folder(name)))
        for name, error in zip(leaderboard["backbone"], leaderboard["error"])]
    verdict = transfer_verdict({row.backbone: (row.mode != "scratch", getattr(row, rank_by)) for row in leaderboard.itertuples()})
    leaderboard.attrs["verdict"] = verdict
    leaderboard.attrs["rank_by"] = rank_by
    leaderboard.attrs["top_k"] = min(3, len(folder.class_names))  # the k of `top3_accuracy`: 2 of 2 classes
    plot_leaderboard(leaderboard, comparison.path / layout.LEADERBOARD_PNG)
    comparison.write_leaderboard(leaderboard, {
        "command": "compare", "backbones": list(backbones), "data": folder.source, "verdict": verdict,
        **dataclasses.asdict(options),
    })
    comparison.relocate_runs(out_dir)
    return leaderboard


def _train_one(comparison: artifacts.Comparison, name: str, options: TrainOptions, folder, *, reporter: Reporter,
               verbose: int | str) -> dict:
    """The leaderboard row of `name`: trained on the comparison's split, evaluated on its validation
    images; or the first line of why it failed."""
    import keras

    reporter.message(f"== {name} ==")
    spec = get_backbone(name)
    mode = "scratch" if not spec.pretrained else ("fine-tuned" if options.finetune_epochs else "frozen")
    row = dict.fromkeys(COLUMNS, None) | {"backbone": name, "mode": mode}
    val = folder.examples[folder.examples["split"] == "val"][["path", "label"]]
    try:
        result = train(None, comparison.run_dir(backbone_folder(name)), options.for_backbone(name, comparison.split_file),
                       reporter=reporter, verbose=verbose)
        evaluation = evaluate(result.run_dir, val, reporter=reporter)  # top-3, or all classes when fewer
        return row | {
            "parameters": int(result.model.count_params()),
            "trainable_parameters": int(sum(np.prod(w.shape) for w in result.model.trainable_weights)),
            "val_accuracy": evaluation.summary["accuracy"],  # multi-label: images whose label set is exactly right
            "top3_accuracy": evaluation.summary.get("top_k_accuracy"),
            "val_map": evaluation.summary.get("mean_average_precision"),
            "train_seconds": result.metrics["train_seconds"],
            "images_per_second": evaluation.summary["images_per_second"],
            "error": "",
        }
    except TrainingInterrupted:
        raise  # Ctrl-C stops the comparison, not only this backbone
    except TransferError as error:
        reporter.warning(f"{name} failed: {error}")
        return row | {"error": str(error).splitlines()[0]}
    finally:
        keras.backend.clear_session()
