"""`transfer compare`: several backbones trained and evaluated on the same split, side by side.

The data is listed, checked and split once; the split is written as a manifest (`split.csv`) and
every backbone trains from it (`--manifest`), with the same seed and the same epoch budget, into
`OUT/runs/NAME`. Each is then evaluated on the same validation images. A backbone that fails (for
example, ImageNet weights that cannot be downloaded) gets a leaderboard row with the reason, and
the others still run.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import pandas as pd

from transfer import outputs
from transfer.backbones import BACKBONES, get_backbone
from transfer.data import prepare
from transfer.errors import InvalidOptionError, TransferError
from transfer.evaluation import evaluate
from transfer.options import TrainOptions
from transfer.progress import SILENT, Reporter
from transfer.sources import list_folder
from transfer.training import train

COLUMNS = [
    "backbone", "mode", "parameters", "trainable_parameters", "val_accuracy", "top3_accuracy",
    "train_seconds", "images_per_second", "run_dir", "error",
]


def compare(
    data_dir: Path,
    out_dir: Path,
    backbones: Sequence[str],
    options: TrainOptions = TrainOptions(),
    *,
    val_dir: Path | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
    verbose: int | str = "auto",
) -> pd.DataFrame:
    """Trains and evaluates each of `backbones` on one split of `data_dir`; writes the leaderboard.

    `options` apply to every backbone, except that baselines always start from random weights and
    train in one stage; an unset `weights` or `image_size` takes each backbone's default.

    Returns:
        The leaderboard, best validation accuracy first (failed runs last).
    """
    unknown = [name for name in backbones if name not in BACKBONES]
    if unknown or not backbones:
        raise InvalidOptionError(
            f"--backbones must be a comma-separated list of {', '.join(BACKBONES)}; received {', '.join(backbones) or 'nothing'}."
        )
    for name in backbones:  # every option checked before any training
        _options_for(name, options, Path(outputs.SPLIT)).resolved()
    out_dir = Path(out_dir)
    outputs.check_destination(out_dir, force)
    listing = list_folder(Path(data_dir), Path(val_dir) if val_dir else None)
    folder = prepare(listing, image_size=32, val_split=options.val_split, seed=options.seed, reporter=reporter)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an earlier comparison, which check_destination allowed with force
    # Each run is written atomically by `train`; the leaderboard files are written last.
    out_dir.mkdir(parents=True)
    comparison = outputs.Comparison(out_dir)
    comparison.write_data(folder)
    val = folder.examples[folder.examples["split"] == "val"][["path", "label"]]

    rows = []
    for name in backbones:
        reporter.message(f"== {name} ==")
        run_options = _options_for(name, options, comparison.split_file)
        spec = get_backbone(name)
        mode = "scratch" if not spec.pretrained else ("fine-tuned" if options.finetune_epochs else "frozen")
        row = dict.fromkeys(COLUMNS, None) | {"backbone": name, "mode": mode, "run_dir": str(comparison.run_dir(name))}
        try:
            result = train(None, comparison.run_dir(name), run_options, reporter=reporter, verbose=verbose)
            evaluation = evaluate(result.run_dir, val, top_k=3, reporter=reporter)
        except TransferError as error:
            reporter.warning(f"{name} failed: {error}")
            rows.append(row | {"error": str(error).splitlines()[0]})
            continue
        model = result.model
        rows.append(row | {
            "parameters": int(model.count_params()),
            "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "val_accuracy": evaluation.summary["accuracy"],
            "top3_accuracy": evaluation.summary["top_k_accuracy"],
            "train_seconds": result.metrics["train_seconds"],
            "images_per_second": evaluation.summary["images_per_second"],
            "error": "",
        })
        keras.backend.clear_session()

    leaderboard = pd.DataFrame(rows, columns=COLUMNS).astype({"parameters": "Int64", "trainable_parameters": "Int64"})
    leaderboard = leaderboard.sort_values("val_accuracy", ascending=False, na_position="last", kind="stable")
    leaderboard = leaderboard.reset_index(drop=True)
    comparison.write_leaderboard(leaderboard, {
        "command": "compare", "backbones": list(backbones), "data": folder.source, **dataclasses.asdict(options),
    })
    return leaderboard


def _options_for(name: str, options: TrainOptions, manifest: Path) -> TrainOptions:
    spec = get_backbone(name)
    weights = options.weights if spec.pretrained else None
    return dataclasses.replace(
        options, backbone=name, weights=weights, manifest=str(manifest), val_dir=None,
        finetune_epochs=options.finetune_epochs if spec.pretrained else 0,
    )
