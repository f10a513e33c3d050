"""`transfer audit`: the labels to doubt, the images that are (nearly) the same, the ones that fit no class.

**Out-of-fold probabilities.** Every usable image is put in one of K stratified folds (as
`transfer cross-validate` does: byte-for-byte copies share a fold). Each image's class
probabilities come from a model that never saw it: the one fitted on the other K - 1 folds. With a
pretrained backbone (or a run's, `--weights RUN_DIR`) the backbone is frozen, each image's pooled
features are computed once (and kept in the feature cache), and each fold fits the logistic
regression of `train --head logistic` on them, so the audit costs about one backbone pass. A
from-scratch baseline (`lenet`, `alexnet`) is trained with `transfer train` on each fold's K - 1
folds, and once more on every image for the feature space below.

**Label issues.** A label is flagged where cleanlab's confident learning
(`cleanlab.filter.find_label_issues`, Northcutt et al. 2021) contradicts it on the out-of-fold
probabilities *and* the chance that it is wrong, under a noise model fitted to the same
probabilities (`transfer.metrics.label_noise`: a temperature and a share of random labels, by maximum
likelihood), is at least 0.5. `score` is that chance (the flags are ranked by it, surest first);
the mean score of the flags is the estimated precision of the list. Where the out-of-fold model is
closer to guessing than to being right, nothing is flagged: it cannot tell a wrong label from its
own mistake. `suggested` is the most probable other class.

**Near-duplicates and outliers**, in the backbone's feature space (cosine distance to the 10
nearest images), by the rules of cleanlab's Datalab: a pair is a near-duplicate when its distance is
under 0.13 x the median distance of an image to its nearest neighbour; an image is an outlier when
its mean distance to its nearest images is beyond Q3 + 1.7 x IQR of everyone's.

Outputs (`transfer.outputs.layout`): `audit.csv` (the most suspect first), `audit.html` (thumbnails beside
examples of the given and the suggested class), `original.csv` (`path,label,split`: every audited
image with its given label and a fixed split: the manifest's own, or the one `train` would draw
with the seed), `clean.csv` (the same without the flagged *training* images: the validation images
stay, flagged or not, so a run on `clean.csv` and one on `original.csv` are validated on the same
images with the same labels), `out_of_fold.csv`, `folds.csv`, `skipped.csv` and `config.json`
(with the estimated precision and whether training on `clean.csv` is advised:
`label_noise.advice`). The data is only read: nothing in it is moved, renamed or changed.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from transfer.core import extras
from transfer.metrics import label_noise
from transfer.metrics.logistic import logistic_out_of_fold
from transfer.outputs import layout, publishing
from transfer.selection.cross_validation import images_in_folds
from transfer.core.errors import DataError, InvalidOptionError, require
from transfer.training.options import TrainOptions
from transfer.selection.experiments import Experiment
from transfer.selection.probe import frozen_features
from transfer.core.progress import SILENT, Reporter
from transfer.training.option_fields import flag, option_flag

#: Neighbours each image is compared with in feature space.
NEIGHBOURS = 10
#: A near-duplicate pair: cosine distance under this share of the median nearest-neighbour distance
#: (cleanlab Datalab's `near_duplicate` threshold).
NEAR_DUPLICATE = 0.13
#: An outlier: mean distance to its neighbours beyond Q3 + this x IQR (Datalab's `outlier` rule,
#: 1 / 0.37037 - 1).
OUTLIER_IQR = 1 / 0.37037 - 1
KINDS = ("label_issue", "near_duplicate", "outlier")
COLUMNS = ["path", "given", "suggested", "kind", "score", "other", "distance", "note"]
#: The options that only a baseline trained per fold uses: a frozen backbone's logistic regression has none.
#: The audited images with their given labels and the split `clean.csv` keeps: the "before" of a before/after comparison.
ORIGINAL_CSV = "original.csv"
BASELINE_ONLY = ("epochs", "lr", "optimizer", "schedule", "patience", "augment", "flip", "val_split")


@dataclass(frozen=True)
class AuditResult:
    """`table`: `audit.csv`; `clean`: `clean.csv`; `summary`: `config.json`; `path`: the audit folder."""

    table: pd.DataFrame
    clean: pd.DataFrame
    summary: dict
    path: Path


def audit(
    data_dir: Path | None,
    out_dir: Path,
    options: TrainOptions = TrainOptions(),
    *,
    folds: int = 5,
    force: bool = False,
    reporter: Reporter = SILENT,
    verbose: int | str = 0,
) -> AuditResult:
    """Audits the images of `data_dir` (or `options.manifest`, its split column unused) with the
    backbone of `options` by `folds`-fold out-of-fold probabilities, and writes the audit to `out_dir`.

    Raises:
        TransferError: bad options, too few images of a class for the folds, an output in the way
            or inside the data, cleanlab missing: nothing is written.
    """
    require(isinstance(folds, int) and folds >= 2, "--folds", folds, "an integer >= 2")
    resolved = _check_options(options)
    extras.require("audit")
    experiment = Experiment("audit", Path(out_dir), resolved, force, reporter, discarded="the unfinished runs",
                            again="Run the command again to audit.")
    listing = experiment.preflight(data_dir)
    if listing.multi_label:
        raise InvalidOptionError(
            f"{listing.source} is a multi-label manifest (a labels column); the audit finds label issues in data with one "
            f"label per image, and does not audit label sets yet. Audit one label at a time with a path,label manifest "
            f"of yes/no classes, or train and look at the report's most confident errors."
        )
    given_split = listing.files.set_index("path")["split"] if (listing.files["split"] != "").all() else None
    folder = experiment.prepare_data(listing, forget_split=True)
    images = images_in_folds(folder, folds, resolved.seed, reporter)
    split = given_split if given_split is not None else folder.examples.set_index("path")["split"]
    class_names = folder.class_names
    labels = images["label"].map({name: i for i, name in enumerate(class_names)}).to_numpy()
    reporter.message(f"Auditing {len(images)} images of {len(class_names)} classes by {folds}-fold out-of-fold "
                     f"probabilities: each image is judged by a model that never saw it.")
    with experiment.staged() as staging:
        if resolved.transfers:
            features, _ = frozen_features(resolved.backbone, images["path"].tolist(), options, len(class_names), reporter)
            probabilities = logistic_out_of_fold(features, labels, images["fold"].to_numpy(), len(class_names),
                                                 seed=resolved.seed, balanced=resolved.class_weight == "auto")
        else:  # each fold's `train` resolves the options given
            probabilities, features = _baseline_out_of_fold(staging / "runs", images, options, class_names,
                                                            reporter=reporter, verbose=verbose)
        noise = label_noise.fit(probabilities, labels)
        table = find_issues(images, labels, probabilities, features, class_names, noise)
        original = images[["path", "label"]].assign(split=images["path"].map(split).to_numpy())
        clean = without_flags(original, table)
        summary = {**_summary(images, labels, probabilities, table, noise, folder.source, resolved, folds),
                   "clean_images": len(clean)}
        if not noise.judged:
            reporter.warning(f"The audit cannot judge these labels: {noise.why}. Nothing is flagged.")
        _write(staging, images, probabilities, table, {layout.CLEAN_CSV: clean, ORIGINAL_CSV: original}, folder, summary)
    return AuditResult(table, clean, summary, experiment.out_dir)


def without_flags(original: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """`clean.csv`: the training images of `original` (`path,label,split`) without a label issue, and
    every validation image, flagged or not, so that a run on it is validated on the same images, with
    the same labels, as a run on `original.csv`."""
    drop = original["path"].isin(table.loc[table["kind"] == "label_issue", "path"]) & (original["split"] == "train")
    return original[~drop].reset_index(drop=True)


def _check_options(options: TrainOptions) -> TrainOptions:
    """The resolved options; refuses what the audit cannot use (a validation folder; recipe options
    with a frozen backbone, which is audited by a logistic regression)."""
    if options.val_dir:
        raise InvalidOptionError(
            f"Received {flag.val_dir} {options.val_dir}; the audit judges every image by a model that did not see it. Put all "
            f"the labelled images in DATA_DIR (or audit the validation folder on its own)."
        )
    defaults = TrainOptions()
    given = [name for name in BASELINE_ONLY if getattr(options, name) != getattr(defaults, name)]
    if given and options.transfers:
        flags = ", ".join(option_flag(name) for name in given)
        raise InvalidOptionError(
            f"Received {flags} with the pretrained backbone {options.backbone or 'resnet50'}; a pretrained backbone is "
            f"audited by a logistic regression on its frozen features, which has no training recipe (epochs, learning "
            f"rate, augmentation, validation split). Drop {flags}, or audit with {flag.backbone} lenet or alexnet, which are "
            f"trained on each fold."
        )
    return dataclasses.replace(options, head="logistic").resolved() if options.transfers else options.resolved()


def _baseline_out_of_fold(scratch: Path, images: pd.DataFrame, options: TrainOptions, class_names: list[str], *,
                          reporter: Reporter, verbose: int | str) -> tuple[np.ndarray, np.ndarray]:
    """A from-scratch baseline trained (`transfer train`) on each fold's other folds and scoring the
    fold; then on every image, whose features are the feature space. The runs are deleted after."""
    import keras

    from transfer.training.features import extract_features, model_feature_extractor
    from transfer.evaluation.scorers import load_scorer
    from transfer.training.train import train

    scratch.mkdir()
    probabilities = np.zeros((len(images), len(class_names)))
    folds = int(images["fold"].max())
    for fold in [*range(1, folds + 1), None]:
        held_out = images["fold"] == fold
        manifest = scratch / f"fold-{fold or 'all'}.csv"
        publishing.write_table(manifest, images.loc[~held_out, ["path", "label"]])
        reporter.message(f"== {options.backbone}: " + (f"fold {fold}/{folds}, trained on {int((~held_out).sum())} images, judging {int(held_out.sum())} =="
                                                        if fold else f"trained on all {len(images)} images, for the feature space =="))
        run = train(None, scratch / f"fold-{fold or 'all'}", dataclasses.replace(options.for_backbone(options.backbone, manifest), unknown="off"),
                    reporter=reporter, verbose=verbose)
        if fold is None:
            extractor, _ = model_feature_extractor(run.run_dir)
            features = extract_features(extractor, images["path"].tolist(), options.batch_size or 32, reporter=reporter,
                                        description=f"{options.backbone} features")
        else:
            paths = images.loc[held_out, "path"].tolist()
            scored = dict(load_scorer(run.run_dir).score_files(paths, options.batch_size or 32))
            failed = [path for path in paths if isinstance(scored[path], str)]
            if failed:
                raise DataError(f"{failed[0]} can no longer be read ({scored[failed[0]]}); it was readable when checked.")
            scored = {path: row.probabilities for path, row in scored.items()}
            probabilities[held_out.to_numpy()] = np.stack([scored[path] for path in paths])
        keras.backend.clear_session()
    shutil.rmtree(scratch)
    return probabilities, features


def find_issues(images: pd.DataFrame, labels: np.ndarray, probabilities: np.ndarray, features: np.ndarray,
                class_names: list[str], noise: label_noise.NoiseModel | None = None) -> pd.DataFrame:
    """The rows of `audit.csv` (`COLUMNS`): label issues (`label_noise.flagged`; `noise` fitted to the
    probabilities where not given), the surest first; near-duplicate pairs, the closest first;
    outliers, the farthest first."""
    paths = images["path"].to_numpy()
    distances, neighbours = _neighbours(features)
    rows = (
        _label_issues(paths, labels, probabilities, class_names, noise or label_noise.fit(probabilities, labels))
        + _near_duplicates(paths, labels, distances, neighbours, class_names)
        + _outliers(paths, labels, distances, class_names)
    )
    return pd.DataFrame(rows, columns=COLUMNS)


def _label_issues(paths, labels, probabilities, class_names, noise: label_noise.NoiseModel) -> list[dict]:
    from cleanlab.filter import find_label_issues

    candidates = np.flatnonzero(find_label_issues(labels, probabilities, n_jobs=1))
    rows = []
    for i in label_noise.flagged(noise, candidates):
        others = probabilities[i].copy()
        others[labels[i]] = -1
        suggested = int(np.argmax(others))
        given = class_names[labels[i]]
        rows.append({
            "path": paths[i], "given": given, "suggested": class_names[suggested], "kind": "label_issue",
            "score": float(noise.wrong[i]),
            "note": f"chance the label is wrong {noise.wrong[i]:.3f}; out of fold: P({given}) = {probabilities[i, labels[i]]:.3f}, "
                    f"P({class_names[suggested]}) = {probabilities[i, suggested]:.3f}",
        })
    return rows


def _neighbours(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's cosine distances to its nearest other images, and their indices, nearest first."""
    from sklearn.neighbors import NearestNeighbors

    k = min(NEIGHBOURS, len(features) - 1)
    search = NearestNeighbors(n_neighbors=k, metric="cosine").fit(features.reshape(len(features), -1))
    distances, indices = search.kneighbors()
    return np.clip(distances, 0, None), indices


def _near_duplicates(paths, labels, distances, neighbours, class_names) -> list[dict]:
    radius = NEAR_DUPLICATE * max(float(np.median(distances[:, 0])), 1e-12)
    pairs = {}
    for i, (row_d, row_j) in enumerate(zip(distances, neighbours)):
        for distance, j in zip(row_d, row_j):
            if distance < radius:
                pairs[(min(i, j), max(i, j))] = float(distance)
    rows = []
    for (i, j), distance in sorted(pairs.items(), key=lambda item: item[1]):
        given, other = class_names[labels[i]], class_names[labels[j]]
        note = f"cosine distance {distance:.4f} (near-duplicates: under {radius:.4f})"
        if given != other:
            note += f"; labelled {given} and {other}"
        rows.append({"path": paths[i], "given": given, "suggested": "" if given == other else other, "kind": "near_duplicate",
                     "score": 1 - distance, "other": paths[j], "distance": distance, "note": note})
    return rows


def _outliers(paths, labels, distances, class_names) -> list[dict]:
    mean = distances.mean(axis=1)
    q1, q3 = np.percentile(mean, [25, 75])
    fence = q3 + OUTLIER_IQR * (q3 - q1)
    rows = [
        {"path": paths[i], "given": class_names[labels[i]], "suggested": "", "kind": "outlier", "score": float(mean[i]),
         "distance": float(mean[i]),
         "note": f"mean cosine distance to its {distances.shape[1]} nearest images {mean[i]:.4f} (outliers: over {fence:.4f})"}
        for i in np.flatnonzero(mean > fence)
    ]
    return sorted(rows, key=lambda row: -row["score"])


def _summary(images, labels, probabilities, table, noise: label_noise.NoiseModel, source, options: TrainOptions,
             folds: int) -> dict:
    import cleanlab

    counts = table["kind"].value_counts()
    flags = images.index[images["path"].isin(table.loc[table["kind"] == "label_issue", "path"])].to_numpy()
    advised, advice = label_noise.advice(noise, flags)
    expected = float(noise.wrong.sum())
    return {
        "data": source, "num_images": len(images), "folds": folds, "seed": options.seed,
        "backbone": options.backbone, "weights": options.weights, "image_size": options.image_size,
        "class_weight": options.class_weight,
        "method": "frozen features, logistic regression per fold" if options.transfers else "trained from scratch per fold",
        "out_of_fold_accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "judged": noise.judged,
        "temperature": noise.temperature,
        "estimated_noise_rate": noise.noise_rate,
        "expected_wrong_labels": expected,
        "label_issues": int(counts.get("label_issue", 0)),
        "estimated_precision": float(noise.wrong[flags].mean()) if len(flags) else None,
        "estimated_recall": float(noise.wrong[flags].sum() / expected) if len(flags) and expected > 0 else None,
        "clean_advised": advised,
        "advice": advice,
        "near_duplicate_pairs": int(counts.get("near_duplicate", 0)),
        "outliers": int(counts.get("outlier", 0)),
        "cleanlab": cleanlab.__version__,
    }


def _write(staging: Path, images, probabilities, table, manifests: dict[str, pd.DataFrame], folder, summary) -> None:
    from transfer.reports.audit_page import render

    publishing.write_table(staging / layout.FOLDS_CSV, images)
    publishing.write_table(staging / layout.SKIPPED, folder.skipped)
    scores = pd.DataFrame(probabilities, columns=[f"p:{name}" for name in folder.class_names])
    publishing.write_table(staging / layout.OUT_OF_FOLD_CSV, pd.concat([images, scores], axis=1))
    publishing.write_table(staging / layout.AUDIT_CSV, table)
    for name, manifest in manifests.items():
        publishing.write_table(staging / name, manifest)
    publishing.write_json(staging / layout.CONFIG, summary)
    publishing.write_text(staging / layout.AUDIT_HTML, render(images, probabilities, table, folder.class_names, summary))
