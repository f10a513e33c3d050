"""`transfer probe` and `train --backbone auto`: rank backbones in minutes, and say whether more images would help.

For each candidate backbone, one pass over the images (through the feature cache, so a second
probe costs seconds) gives each image's pooled features with the backbone frozen; then
`transfer.metrics.transferability` scores them with no training of the backbone: a cross-validated linear
probe (the logistic regression of `--head logistic`, K stratified folds; byte-for-byte copies share a
fold) and LogME. A from-scratch baseline (`lenet`, `alexnet`) is probed through its randomly
initialized convolutional layers: what its architecture gives before any training, which says
little of what it reaches when trained. The ranking is by the probe's accuracy, then its log loss.

It is a frozen-feature estimate, not the fine-tuned result: the outputs say so.

`curve=True` adds the data-efficiency curve of each backbone: the probe fitted on nested,
stratified subsets of the training images (1, 2, 5, 10, 20, ... per class, `draws` draws each) and
scored on the same held-out images (`--val-dir`, or a stratified `--val-split` share), with one
sentence on what the last doubling gained and what a fitted power law extrapolates for the next.

Outputs (`transfer.outputs.layout`): `probe.csv`, `probe.png`, `config.json`, and `curve.csv`, `curve.png`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from transfer.outputs import layout, publishing
from transfer.models.registry import BACKBONES, check_backbone_list, get_backbone
from transfer.selection.cross_validation import images_in_folds
from transfer.selection.experiments import Experiment, prepare_listing, require_some_success
from transfer.core.errors import DataError, InvalidOptionError, ProbeFailedError, TransferError, require
from transfer.training.options import TrainOptions
from transfer.core.progress import SILENT, Reporter
from transfer.training.option_fields import flag

if TYPE_CHECKING:
    import keras

AUTO = "auto"
NOTE = ("A probe is a frozen-feature estimate (a linear classifier on each backbone's features), not the result of "
        "fine-tuning; the ranking is what to train first.")
COLUMNS = ["backbone", "accuracy", "accuracy_sd", "log_loss", "log_loss_sd", "log_me", "feature_size", "parameters",
           "pass_seconds", "images_per_second", "error"]


@dataclass(frozen=True)
class ProbeResult:
    """`table`: `probe.csv`, the best first; `curve`: `curve.csv` (empty without a curve);
    `summary`: `config.json`; `path`: the probe's folder."""

    table: pd.DataFrame
    curve: pd.DataFrame
    summary: dict
    path: Path | None


def probe(
    data_dir: Path | None,
    out_dir: Path,
    backbones: Sequence[str],
    options: TrainOptions = TrainOptions(),
    *,
    folds: int = 5,
    curve_draws: int | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> ProbeResult:
    """Probes each of `backbones` on the images of `data_dir` (and `options.val_dir`, or
    `options.manifest`) and writes the ranking to `out_dir`; with `curve_draws`, the curve too, each
    subset size drawn that many times.

    Raises:
        TransferError: bad options or data, too few images for the folds or the curve, an output in
            the way: nothing is written. Every backbone failing is an error naming each reason.
    """
    experiment = Experiment("probe", Path(out_dir), options, force, reporter)
    experiment.check_backbones(backbones, "")  # every option checked before any image is read
    require(isinstance(folds, int) and folds >= 2, "--folds", folds, "an integer >= 2")
    require(curve_draws is None or (isinstance(curve_draws, int) and curve_draws >= 1), "--draws", curve_draws, "an integer >= 1")
    curve = curve_draws is not None
    listing = experiment.preflight(data_dir)
    images, class_names = _images(listing, options, folds, reporter)
    if curve:
        _check_curve(images, class_names)
    table, features = rank_backbones(images, class_names, backbones, options, reporter=reporter)
    curve_table = (pd.concat([_curve(name, features[name], images, class_names, curve_draws, options.seed) for name in features])
                   if curve else pd.DataFrame())
    summary = _summary(table, curve_table, listing.source, len(images), folds)
    with experiment.staged() as staging:
        from transfer.outputs.figures import plot_curve, plot_probe

        publishing.write_table(staging / layout.PROBE_CSV, table)
        plot_probe(table, staging / layout.PROBE_PNG)
        if curve:
            publishing.write_table(staging / layout.CURVE_CSV, curve_table)
            plot_curve(curve_table, staging / layout.CURVE_PNG)
        publishing.write_json(staging / layout.CONFIG, summary)
    return ProbeResult(table, curve_table, summary, experiment.out_dir)


def _images(listing, options: TrainOptions, folds: int, reporter: Reporter) -> tuple[pd.DataFrame, list[str]]:
    """The usable images (`path`, `label`, `index`, `split`: held out for the curve or not, `fold`)."""
    if listing.multi_label:
        raise InvalidOptionError(f"{listing.source} is multi-label (a labels column); the probe ranks backbones for one "
                                 f"label per image. Compare multi-label backbones with `transfer compare` (ranked by mAP).")
    folder = prepare_listing(listing, options, reporter, listed_in=None)  # the probe writes no skipped.csv
    images = images_in_folds(folder, folds, options.seed, reporter, columns=("path", "label", "split"))
    images["index"] = images["label"].map({name: i for i, name in enumerate(folder.class_names)})
    return images, folder.class_names


def rank_backbones(images: pd.DataFrame, class_names: list[str], backbones: Sequence[str], options: TrainOptions, *,
                   reporter: Reporter = SILENT) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """`(probe table, {backbone: features})`: each backbone's row (or the first line of why it could
    not run), the best first. Raises DataError when none could."""
    from transfer.metrics.transferability import log_me, probe_scores

    labels, folds = images["index"].to_numpy(), images["fold"].to_numpy()
    rows, features = [], {}
    for name in backbones:
        reporter.message(f"== {name} ==")
        row = dict.fromkeys(COLUMNS) | {"backbone": name, "error": ""}
        paths, started = images["path"].tolist(), time.perf_counter()
        try:
            extracted, extractor = frozen_features(name, paths, options, len(class_names), reporter)
        except TransferError as error:
            reporter.warning(f"{name} cannot be probed: {error}")
            rows.append(row | {"error": str(error).splitlines()[0]})
            continue
        features[name] = extracted
        facts = backbone_facts(extractor, extracted, paths, time.perf_counter() - started)
        scores = probe_scores(extracted, labels, folds, len(class_names), seed=options.seed)
        rows.append(row | facts | {key: scores[key] for key in ("accuracy", "accuracy_sd", "log_loss", "log_loss_sd")}
                    | {"log_me": log_me(extracted, labels)})
        reporter.message(f"{name}: probe accuracy {scores['accuracy']:.3f} +- {scores['accuracy_sd']:.3f}, "
                         f"LogME {rows[-1]['log_me']:.3f}")
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"feature_size": "Int64", "parameters": "Int64"})
    require_some_success(table, ProbeFailedError, "No backbone could be probed",
                         "Put the weights files where the errors say, or probe model files (--backbones PATH.keras) or baselines.")
    table = table.sort_values(["accuracy", "log_loss"], ascending=[False, True], na_position="last", kind="stable")
    return table.reset_index(drop=True), features


def frozen_features(name: str, paths: list[str], options: TrainOptions, num_classes: int,
                    reporter: Reporter) -> tuple[np.ndarray, keras.Model]:
    """`[images, D]` features of backbone `name` frozen (a baseline: its random convolutions) for
    `paths`, through the feature cache, and the extractor that computes them."""
    import keras
    import tensorflow as tf

    from transfer.training.features import FeatureCache, default_cache_dir, extract_features, frozen_extractor
    from transfer.training.state import build_model

    chosen = options.for_backbone(name, "").resolved()
    spec = chosen.backbone_spec()
    keras.backend.clear_session()
    model = build_model(spec, chosen, num_classes, tf.distribute.get_strategy(), SILENT)
    extractor = frozen_extractor(model, spec, chosen.transfers)
    cache = FeatureCache(chosen.cache_dir or default_cache_dir(), extractor, chosen.image_size)
    features = extract_features(extractor, paths, chosen.batch_size or 32, cache=cache if chosen.cache_features else None,
                                reporter=reporter, description=f"{name}: features")
    return features.reshape(len(paths), -1), extractor


def backbone_facts(extractor: keras.Model, features: np.ndarray, paths: list[str], seconds: float) -> dict:
    """A probe row's facts: feature size, parameters, the pass's seconds, and images per second at
    prediction (16 images, timed after a warm-up call)."""
    from transfer.data.folders import iter_decoded_batches

    sample = next(iter_decoded_batches(paths[:16], int(extractor.input_shape[1]), 16)).pixels
    extractor.predict_on_batch(sample)
    timed = time.perf_counter()
    extractor.predict_on_batch(sample)
    speed = len(sample) / (time.perf_counter() - timed)
    return {"feature_size": features.shape[1], "parameters": int(extractor.count_params()),
            "pass_seconds": round(seconds, 2), "images_per_second": round(speed, 1)}


def _check_curve(images: pd.DataFrame, class_names: list[str]) -> None:
    held = images[images["split"] == "val"]["label"].value_counts()
    train = images[images["split"] == "train"]["label"].value_counts()
    lacking = [name for name in class_names if held.get(name, 0) < 1 or train.get(name, 0) < 1]
    if lacking:
        raise DataError(f"--curve needs at least one held-out and one training image of each class; "
                        f"{', '.join(lacking)} lack one. Add images, or raise {flag.val_split}.")


def _curve(name: str, features: np.ndarray, images: pd.DataFrame, class_names: list[str], draws: int, seed: int) -> pd.DataFrame:
    """The probe of `name` on each nested subset of the training images, scored on the held-out ones."""
    from transfer.metrics.logistic import logistic_regression
    from transfer.metrics.transferability import curve_subsets

    train, held = images["split"] == "train", images["split"] == "val"
    labels = images["index"].to_numpy()
    train_rows = np.flatnonzero(train.to_numpy())
    rows = []
    for (draw, per_class), subset in curve_subsets(labels[train_rows], draws, seed).items():
        chosen = train_rows[subset]
        regression, _, _ = logistic_regression(features[chosen], labels[chosen], len(class_names), seed=seed)
        predicted = regression.predict(features[held.to_numpy()])
        rows.append({"backbone": name, "draw": draw, "per_class": per_class, "train_images": len(chosen),
                     "held_out": int(held.sum()), "accuracy": float(np.mean(predicted == labels[held.to_numpy()]))})
    return pd.DataFrame(rows)


def curve_sentence(curve: pd.DataFrame) -> str | None:
    """What the last doubling of images per class gained, and what a power law fitted to the curve
    extrapolates for the next (said to be an extrapolation)."""
    from transfer.metrics.transferability import power_law

    means = curve.groupby("per_class")["accuracy"].mean()
    if len(means) < 3:
        return None
    steps = means.index.to_numpy()
    last, before = steps[-1], steps[steps <= steps[-1] / 2]
    if not len(before):
        return None
    previous = before[-1]
    try:
        a, b = power_law(steps.astype(float), 1 - means.to_numpy())
    except (np.linalg.LinAlgError, TypeError, ValueError):  # fewer than two points with an error left to fit
        a, b = 0.0, 0.0
    predicted = 1 - a * (2 * last) ** -b
    held_out = int(curve["held_out"].iloc[0])
    measured = (f"From {previous} to {last} images per class the held-out accuracy went from {means[previous]:.3f} to "
                f"{means[last]:.3f} ({means[last] - means[previous]:+.3f}; {held_out} held-out images).")
    if b <= 0 or predicted <= means[last]:
        return measured + (" The curve is flat or within noise here: a power law fitted to it predicts no gain from "
                           "more images of this kind.")
    return measured + (f" A power law fitted to the curve (error = {a:.2f} x n^-{b:.2f}) extrapolates {predicted:.3f} at "
                       f"{2 * last} per class ({predicted - means[last]:+.3f}): an extrapolation, not a measurement.")


def _summary(table: pd.DataFrame, curve: pd.DataFrame, source: str, count: int, folds: int) -> dict:
    ok = table[~table["error"].astype(bool)]
    best = ok.iloc[0]
    margin = float(best["accuracy"] - ok.iloc[1]["accuracy"]) if len(ok) > 1 else None
    sentences = {name: curve_sentence(group) for name, group in curve.groupby("backbone")} if len(curve) else {}
    return {"data": source, "num_images": count, "folds": folds, "best": best["backbone"], "margin": margin,
            "note": NOTE, "curve": sentences, "ranking": _records(table)}


def _records(table: pd.DataFrame) -> list[dict]:
    """The rows as JSON can hold them: a failed backbone's missing numbers as null, not NaN."""
    return [{key: (None if isinstance(value, float) and value != value else value.item() if hasattr(value, "item") else value)
             for key, value in row.items()} for row in table.astype(object).to_dict(orient="records")]


def default_candidates() -> list[str]:
    """`--backbone auto` without `--backbones`: the registry's pretrained backbones."""
    return [name for name in BACKBONES if get_backbone(name).pretrained]


def train_auto(data_dir: Path | None, out_dir: Path, options: TrainOptions, *, force: bool = False,
               reporter: Reporter = SILENT, verbose: int | str = "auto"):
    """`transfer train`: with `--backbone auto` the probe's winner is trained (the probe's record goes
    into `config.json`), once the run's destination is known to be free; any other backbone is
    trained as given. Returns `transfer.training.train`'s result."""
    from transfer.training.train import train

    probed = None
    if options.backbone == AUTO:
        publishing.check_destination(Path(out_dir), kind="run", force=force, data=(data_dir, options.val_dir))
        options, probed = choose_backbone(data_dir, options, reporter)
    return train(data_dir, out_dir, options, force=force, reporter=reporter, verbose=verbose, probed=probed)


def choose_backbone(data_dir: Path | None, options: TrainOptions, reporter: Reporter) -> tuple[TrainOptions, dict]:
    """`train --backbone auto`: probes the candidates (`options.candidates`, else the registry's
    pretrained backbones), says which won and by how much, and returns the options with the winner
    as the backbone, and the probe's record for `config.json`."""
    from transfer.training.preflight import list_data

    names = [n.strip() for n in (options.candidates or ",".join(default_candidates())).split(",") if n.strip()]
    check_backbone_list(names)
    plain = dataclasses.replace(options, backbone=None, candidates=None)
    images, class_names = _images(list_data(data_dir, plain), plain, 5, reporter)
    table, _ = rank_backbones(images, class_names, names, plain, reporter=reporter)
    summary = _summary(table, pd.DataFrame(), "", len(images), 5)
    margin = f", {summary['margin']:+.3f} ahead of {table.iloc[1]['backbone']}" if summary["margin"] is not None else ""
    reporter.message(f"{flag.backbone} auto: {summary['best']} wins the probe (accuracy {table.iloc[0]['accuracy']:.3f}{margin}); "
                     f"training it. {NOTE}")
    return dataclasses.replace(options, backbone=summary["best"], candidates=None), {
        "candidates": names, "best": summary["best"], "margin": summary["margin"], "ranking": summary["ranking"]}
