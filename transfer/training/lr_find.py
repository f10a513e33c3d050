"""`transfer lr-find`: a short learning-rate sweep that suggests `--lr` (fastai's `lr_find`).

The sweep trains what the first stage of `transfer train` with the same options would train (the
new head on the frozen backbone's pooled features for a pretrained or transferred backbone; the
whole network, augmentation included, for a baseline from scratch) for `steps` batches, raising the
learning rate exponentially from `start_lr` to `end_lr`, and records each batch's loss. It stops
early once the smoothed loss exceeds four times its minimum (it has diverged).

The suggestion is fastai's `valley` rule on the smoothed loss (the first 10% and last 5 steps left
out, as fastai does): the longest stretch over which the loss keeps falling, and a point half way
into it (at 1/3 + 1/6 of its length). It lies where the loss is falling fast and well before it
blows up, which is where a stage's rate should start.

The frozen stage is swept on unaugmented features (computed once, through the feature cache) and
without mixing: what the head's rate depends on is the scale of those features and of the loss,
not the random transforms. Nothing is written but `lr_find.csv` and `lr_find.png` in the output
folder; the model is built for the sweep and thrown away, and no run is changed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from transfer.outputs import layout, publishing
from transfer.core.errors import InvalidOptionError
from transfer.core.choices import default_batch_size
from transfer.training.options import TrainOptions
from transfer.core.errors import require
from transfer.training.preflight import preflight, with_labels_kind
from transfer.core.progress import SILENT, Reporter

#: The smoothing of the recorded loss (an exponential moving average, bias-corrected, as fastai's).
SMOOTHING = 0.98
#: The sweep stops once the smoothed loss exceeds this multiple of its minimum.
DIVERGED = 4.0
RULE = "fastai's valley rule: half way into the longest stretch of falling smoothed loss"


@dataclass(frozen=True)
class LRFind:
    """A finished sweep: one row per step (`step`, `learning_rate`, `loss`, `smoothed_loss`), the
    suggested learning rate, the rule that chose it, and the output folder."""

    table: pd.DataFrame
    suggestion: float
    rule: str
    path: Path
    trained: str


def lr_find(
    data_dir: Path | None,
    out_dir: Path,
    options: TrainOptions = TrainOptions(),
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> LRFind:
    """Sweeps the learning rate on the model `train` would build from `data_dir` and `options`.

    Raises:
        TransferError: bad options or data, or an output that cannot be written; nothing is written.
    """
    require(0 < start_lr < math.inf, "--start-lr", start_lr, "a finite number > 0")
    require(start_lr < end_lr < math.inf, "--end-lr", end_lr, f"a finite number above --start-lr ({start_lr:g})")
    require(steps >= 20, "--steps", steps, "an integer >= 20 (the suggestion leaves out the first 10% and the last 5)")
    stage_two = ["--finetune-epochs"] * bool(options.finetune_epochs) + options.finetune_options_given
    if stage_two:
        raise InvalidOptionError(
            f"lr-find sweeps the first stage's learning rate (--lr); {', '.join(stage_two)} set the fine-tuning stage and "
            f"would have no effect here. Drop {'it' if len(stage_two) == 1 else 'them'}."
        )
    options = dataclasses.replace(options, head=options.head or "dense").resolved()  # the head that has a rate
    if options.head == "logistic":
        raise InvalidOptionError("--head logistic is fitted in closed form and has no learning rate to find; use --head dense.")
    spec = options.backbone_spec()
    out_dir = Path(out_dir)
    listing = preflight(data_dir, out_dir, options, kind="lr-find", force=force)
    options = with_labels_kind(options, listing, reporter)  # a labels manifest: sigmoids and binary cross-entropy

    import tensorflow as tf

    from transfer.data.folders import make_dataset, prepare, report_skipped
    from transfer.training.features import extract_features, extractor_and_cache, features_dataset
    from transfer.training.mixing import make_loss, mixed_batches, one_hot_targets, uses_probability_targets
    from transfer.training.state import build_model

    model = build_model(spec, options, len(listing.class_names), tf.distribute.get_strategy(), reporter)
    folder = prepare(listing, image_size=options.image_size, val_split=options.val_split, seed=options.seed, reporter=reporter)
    report_skipped(folder.skipped, reporter, listed_in=None)  # lr-find writes only its plot and CSV
    paths, labels = folder.paths_and_indices("train")
    batch_size = options.batch_size or default_batch_size(len(paths))
    if options.transfers:
        extractor, cache = extractor_and_cache(model, spec, options)
        features = extract_features(extractor, paths, batch_size, cache=cache, reporter=reporter,
                                    description="Backbone features, train")
        target, dataset = model.get_layer("head"), features_dataset(features, labels, batch_size, shuffle=True, seed=options.seed)
        source = f"of {options.source_run}" if options.source_run else f"--weights {Path(options.weights).name if options.weights not in ('imagenet', 'none') else options.weights}" if spec.source is None else "its own weights"
        trained = f"the new head on the frozen {spec.label}'s features ({source}; unaugmented)"
    else:
        target = model
        dataset = make_dataset(paths, labels, options.image_size, batch_size, shuffle=True, seed=options.seed)
        trained = f"{spec.name} from scratch" + (", augmented" if options.augment else "") + (", mixed" if options.mixing else "")
    if uses_probability_targets(options):
        if not options.multi_label:  # multi-label targets are 0/1 vectors already
            dataset = one_hot_targets(dataset, len(folder.class_names))
        if options.mixing and not options.transfers:
            dataset = mixed_batches(dataset, options, seed=options.seed)
    reporter.message(f"Sweeping the learning rate from {start_lr:g} to {end_lr:g} over {steps} steps of {batch_size} images: {trained}.")
    table = sweep(target, dataset.repeat(), loss=make_loss(options), optimizer=options.optimizer, start_lr=start_lr,
                  end_lr=end_lr, steps=steps, reporter=reporter)
    suggestion = suggest(table)
    with publishing.staged(out_dir, "lr-find") as staging:
        publishing.write_table(staging / layout.LR_FIND_CSV, table)
        from transfer.outputs.figures import plot_lr_find

        plot_lr_find(table, suggestion, staging / layout.LR_FIND_PNG, title=f"lr-find: {trained}")
    return LRFind(table, suggestion, RULE, out_dir, trained)


def sweep(model, dataset, *, loss, optimizer: str, start_lr: float, end_lr: float, steps: int,
          reporter: Reporter = SILENT) -> pd.DataFrame:
    """Trains `model` on `steps` batches of `dataset` at exponentially rising learning rates.

    Returns one row per step run: `step`, `learning_rate`, `loss` (that batch's) and
    `smoothed_loss`; it ends early when the smoothed loss has diverged (`DIVERGED`) or is not finite.
    """
    from transfer.training.stages import make_optimizer

    model.compile(optimizer=make_optimizer(optimizer, start_lr), loss=loss)
    rows, average, best = [], 0.0, math.inf
    with reporter.progress("Learning-rate sweep", total=steps) as progress:
        for step, (inputs, targets) in enumerate(dataset.take(steps)):
            rate = start_lr * (end_lr / start_lr) ** (step / (steps - 1))
            model.optimizer.learning_rate = rate
            value = float(np.asarray(model.train_on_batch(inputs, targets)))
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            rows.append({"step": step, "learning_rate": rate, "loss": value, "smoothed_loss": smoothed})
            progress.advance()
            if not math.isfinite(smoothed) or (step > 0 and smoothed > DIVERGED * best):
                break
            best = min(best, smoothed)
    return pd.DataFrame(rows, columns=["step", "learning_rate", "loss", "smoothed_loss"])


def suggest(table: pd.DataFrame) -> float:
    """fastai's `valley` on the smoothed loss of a sweep of `len(table)` steps (see the module docstring).

    Raises:
        InvalidOptionError: too few steps ran to suggest anything (the loss diverged at once).
    """
    planned = int(table["step"].max()) + 1 if len(table) else 0
    kept = table.iloc[planned // 10: max(0, len(table) - 5)]
    kept = kept[np.isfinite(kept["smoothed_loss"])]
    if len(kept) < 3:
        raise InvalidOptionError(
            f"The loss diverged after {len(table)} steps, too early to suggest a learning rate. Lower --start-lr "
            f"(received the sweep from {table['learning_rate'].iloc[0]:g})."
        )
    rates, losses = kept["learning_rate"].to_numpy(), kept["smoothed_loss"].to_numpy()
    n = len(losses)
    longest = [1] * n  # the longest falling sequence of losses ending at each step
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    return float(rates[max(0, start + int(third) + int(third / 2))])
