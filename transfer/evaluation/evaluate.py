"""`transfer evaluate`: how good a model is on labelled images, and where it fails.

Scores come from the same decoder and model as `transfer predict` (a run directory, or an export of
any format in its own runtime: `transfer.evaluation.scorers`). Metrics are scikit-learn's, computed by
`transfer.metrics.classification` (as at the end of a training run): accuracy, top-k accuracy, log loss, per-class precision,
recall, F1 and support with macro and weighted averages over the classes present in the data
(a class of the model absent from the data is listed with support 0 and left out of the averages),
and the confusion matrix. Evaluating a run on images it was trained on is reported, with the count.

Test-time augmentation (`tta=True`) averages the softmax over views of each image, the multi-crop
testing of the AlexNet paper (ten 224 crops of a 256 image: four corners and the centre, each also
mirrored): the image is decoded at `input / 0.875` and cropped to the input size at the corners and
the centre, each crop also mirrored left-right unless the run was trained without horizontal flips.

A multi-label model (`transfer.metrics.multilabel`) is evaluated on a `labels` manifest (`--manifest`): mean
average precision, micro and macro F1 of its thresholded decisions, each label's precision, recall,
F1, average precision and support, the share of images whose label set is exactly right, and each
label's counts of true and false positives and negatives in place of the confusion matrix.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from transfer.outputs import artifacts, layout, publishing
from transfer.core.errors import DataError, InvalidOptionError
from transfer.models.imagenet import is_imagenet
from transfer.core.choices import MAX_BATCH_SIZE
from transfer.core.errors import require
from transfer.outputs.figures import plot_confusion_matrix
from transfer.evaluation.prediction import resolve_top_k
from transfer.evaluation.scorers import Scored, load_scorer, model_labels
from transfer.core.progress import SILENT, Reporter
from transfer.data.sources import list_folder

if TYPE_CHECKING:
    import tensorflow as tf

    from transfer.evaluation.scorers import Scorer

#: Crop side over decoded side for multi-crop TTA (224 of 256, as in the AlexNet paper).
CROP_FRACTION = 0.875


@dataclass
class Evaluation:
    """Scores and metrics of a model on labelled images.

    Attributes:
        class_names: the model's labels, in output order.
        examples: one row per scored image: `path`, `label`, `predicted`, `confidence`, `top`
            (the top-3 as "label probability; ..."), `correct`.
        scores: `[images, classes]` softmax, rows in `examples` order.
        skipped: files that could not be scored: `path`, `label`, `reason`.
        summary: accuracy, top-k accuracy, log loss, averages, counts, whether TTA was on.
        per_class: precision, recall, F1 and support per class, then the macro and weighted rows.
        confusion: counts, rows the true class and columns the predicted class.
        seconds: wall time of scoring (decoding and forward passes).
    """

    class_names: list[str]
    examples: pd.DataFrame
    scores: np.ndarray
    skipped: pd.DataFrame
    summary: dict
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    seconds: float
    multi_label: bool = False
    unknown: pd.DataFrame | None = None  # `transfer.evaluation.unknown.COLUMNS`, where the model has a detector

    @property
    def errors(self) -> pd.DataFrame:
        """The misclassified images, the most confidently wrong first."""
        wrong = self.examples[~self.examples["correct"]]
        return wrong.sort_values("confidence", ascending=False, kind="stable")


@dataclass(frozen=True)
class Scoring:
    """How `evaluate_folder` scores: the k of top-k accuracy (default min(3, classes)), a multi-label
    model's one `threshold` for every label (default: each label's own), test-time augmentation,
    and the images decoded and scored at a time."""

    top_k: int | None = None
    threshold: float | None = None
    tta: bool = False
    batch_size: int = 32
    unknown_dir: Path | None = None  # images outside the classes, to measure the open-set detector on


def evaluate_folder(
    model_path: Path,
    data: Path,
    out_dir: Path | None = None,
    *,
    scoring: Scoring = Scoring(),
    force: bool = False,
    reporter: Reporter = SILENT,
) -> tuple[Evaluation, Path]:
    """Evaluates a run or an export on `data`, a class folder or a CSV manifest (multi-label ones
    included), and writes the results to `out_dir` (default `RUN/evaluation`, or `NAME-evaluation`
    beside an export). Returns the evaluation and the folder written."""
    from transfer.data.sources import read_manifest

    _check_options(scoring.top_k, scoring.batch_size)
    if out_dir is None and is_imagenet(model_path):
        raise InvalidOptionError(f"Pass --out: {model_path} has no folder to put the evaluation in.")
    out_dir = Path(out_dir) if out_dir is not None else artifacts.default_evaluation_dir(model_path)
    manifest = Path(data).is_file() and Path(data).suffix.lower() == ".csv"
    publishing.check_destination(out_dir, kind="evaluation", force=force,
                                 data=(None if manifest else data, *artifacts.data_folders(model_path)))
    # the model's classes are checked against the data's
    listing = read_manifest(Path(data)) if manifest else list_folder(Path(data), allow_split_names=True)
    publishing.check_outside(out_dir, tuple(listing.folders))
    if listing.multi_label and (is_imagenet(model_path) or not artifacts.open_model(model_path).config().get("multi_label")):
        raise DataError(f"{data} is a multi-label manifest (a labels column), but {model_path} picks one class per image; "
                        f"evaluate it on class folders or a path,label manifest.")
    data = listing.files[["path", "label"]]
    others, other_skipped = [], []
    if scoring.unknown_dir is not None:
        from transfer.evaluation.scorers import unknown_threshold
        from transfer.evaluation.unknown import other_images

        config = {} if is_imagenet(model_path) else artifacts.open_model(model_path).config()
        others, other_skipped = other_images(scoring.unknown_dir, model_labels(model_path), unknown_threshold(config), reporter)
        _say_overlaps(model_path, data, others, reporter)
    evaluation = evaluate(model_path, data, top_k=scoring.top_k, threshold=scoring.threshold, tta=scoring.tta,
                          batch_size=scoring.batch_size, reporter=reporter, others=others)
    seen = _training_images(model_path, data)  # after: data of other classes fails first, with its one line
    if seen:
        reporter.warning(
            f"{seen} of the {len(data)} images were in the training split of {model_path}: the metrics "
            f"overstate how the model does on new images (the run's {layout.SPLIT} lists them)."
        )
    other_skipped = pd.DataFrame([(path, "", reason) for path, reason in other_skipped], columns=layout.SKIPPED_COLUMNS)
    evaluation.skipped = pd.concat([listing.skipped, evaluation.skipped, other_skipped], ignore_index=True)
    evaluation.summary.update(data=listing.source, num_skipped=len(evaluation.skipped), num_training_images=seen)
    artifacts.write_evaluation(evaluation, out_dir, draw=evaluation_pictures(evaluation))
    return evaluation, out_dir


def _say_overlaps(model_path: Path, data: pd.DataFrame, others: list[str], reporter: Reporter) -> None:
    """Says where `--unknown-dir`'s images are the run's training images or the labelled images themselves:
    allowed, but then the numbers say little about photos outside the classes."""
    trained = _training_images(model_path, pd.DataFrame({"path": others}))
    if trained:
        reporter.warning(f"{trained} of the {len(others)} images of --unknown-dir were in the training split of {model_path}: "
                         f"they lie at distance 0 from themselves, so they are answered as in-class by construction.")
    same = {os.path.realpath(path) for path in data["path"]} & {os.path.realpath(path) for path in others}
    if same:
        reporter.warning(f"{len(same)} of the {len(others)} images of --unknown-dir are also among the labelled images evaluated: "
                         f"the AUROC then compares them with themselves.")


def evaluation_pictures(evaluation: Evaluation) -> Callable[[Path], None]:
    """What `artifacts.write_evaluation` draws into the folder it writes (and `transfer report` into
    its own): the confusion matrix and the reliability diagram (its bins also as CSV), or each label's
    precision-recall curve."""
    def draw_unknown(folder: Path) -> None:
        if evaluation.unknown is not None:
            from transfer.outputs.figures import plot_novelty

            publishing.write_table(folder / layout.UNKNOWN_CSV, evaluation.unknown)
            plot_novelty(evaluation.unknown, evaluation.summary, folder / layout.UNKNOWN_PNG)

    if evaluation.multi_label:
        from transfer.outputs.figures import plot_precision_recall

        return lambda folder: (plot_precision_recall(evaluation, folder / layout.PRECISION_RECALL_PNG), draw_unknown(folder))

    def draw(folder: Path) -> None:
        from transfer.metrics.calibration import reliability
        from transfer.outputs.figures import plot_reliability

        draw_unknown(folder)
        plot_confusion_matrix(evaluation.confusion, folder / layout.CONFUSION_PNG)
        truth = [evaluation.class_names.index(label) for label in evaluation.examples["label"]]
        bins = reliability(evaluation.scores, truth)
        plot_reliability(bins, folder / layout.RELIABILITY_PNG, title=f"reliability: ECE {evaluation.summary['ece']:.3f}")
        publishing.write_table(folder / layout.RELIABILITY_CSV, pd.DataFrame(bins))

    return draw


def _check_options(top_k: int | None, batch_size: int) -> None:
    require(top_k is None or top_k >= 1, "--top-k", top_k, "an integer >= 1")
    require(1 <= batch_size <= MAX_BATCH_SIZE, "--batch-size", batch_size, f"an integer between 1 and {MAX_BATCH_SIZE}")


def _training_images(model_path: Path, data: pd.DataFrame) -> int:
    """How many of `data`'s images the run (or the run an export came from) was trained on: the same
    files, or byte-for-byte copies of them (compared by content, as the run's deduplication does)."""
    split = Path(model_path) / layout.SPLIT
    if not split.is_file():
        return 0
    table = publishing.read_table(split)
    config = Path(model_path) / layout.CONFIG
    refit = config.is_file() and bool(publishing.read_json(config).get("refit"))  # the head refit on every image
    fitted = table["split"].isin(["train", "val"]) if refit else table["split"] == "train"
    trained = {os.path.realpath(path) for path in table.loc[fitted, "path"]}
    contents = {publishing.sha256(path) for path in trained if os.path.isfile(path)}  # copies count too
    return sum(
        os.path.realpath(path) in trained or (os.path.isfile(path) and publishing.sha256(path) in contents)
        for path in data["path"]
    )


def evaluate(
    model_path: Path,
    data: pd.DataFrame,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    tta: bool = False,
    batch_size: int = 32,
    reporter: Reporter = SILENT,
    others: Sequence[str] = (),
) -> Evaluation:
    """Scores the images of `data` (`path`, `label` columns; for a multi-label model, each `label`
    the image's labels joined by `;`) and computes the metrics; `threshold` replaces a multi-label
    model's own thresholds. Where the model has an open-set detector, the share of these images it
    answers `unknown` too, and with `others` (images outside the classes, `transfer.evaluation.unknown`)
    how well it separates them.

    Raises:
        InvalidOptionError: `top_k` < 1 or `batch_size` < 1.
        DataError: labels the model does not know, or no image that can be scored.
    """
    _check_options(top_k, batch_size)
    from transfer.metrics.multilabel import is_multi_label, thresholds_of
    from transfer.metrics.multilabel import split_labels

    class_names = model_labels(model_path)  # the classes are checked before the model is loaded
    config = {} if is_imagenet(model_path) else artifacts.open_model(model_path).config()
    multi = is_multi_label(config)
    require(threshold is None or multi, "--threshold", threshold, "given only for a multi-label model")
    top_k = resolve_top_k(top_k, len(class_names), reporter)
    given = {label for joined in data["label"] for label in split_labels(joined)} if multi else set(data["label"])
    unknown = sorted(given - set(class_names))
    if unknown:
        raise DataError(
            f"The data has classes the model was not trained on: {', '.join(unknown)}. The model "
            f"knows {', '.join(class_names)}; evaluate on folders named after those classes."
        )
    model = load_scorer(model_path)
    paths, labels = data["path"].tolist(), dict(zip(data["path"], data["label"]))
    started = time.perf_counter()
    scored, failed = [], []
    with reporter.progress("Evaluating" + (" (TTA)" if tta else ""), total=len(paths)) as progress:
        stream = _tta_scores(model, paths, batch_size) if tta else model.score_files(paths, batch_size)
        for path, scores in stream:
            progress.advance()
            if isinstance(scores, str):
                failed.append((path, labels[path], scores))
            else:
                scored.append((path, scores))
    seconds = time.perf_counter() - started
    if not scored:
        reasons = "; ".join(f"{path}: {reason}" for path, _, reason in failed[:3])
        raise DataError(f"None of the {len(paths)} images could be read ({reasons}{'; ...' if len(failed) > 3 else ''}).")
    arguments = (class_names, [path for path, _ in scored], np.stack([s.probabilities for _, s in scored]), [labels[path] for path, _ in scored])
    if multi:
        evaluation = measure_multi_label(*arguments, thresholds=thresholds_of(config, class_names, threshold), tta=tta, seconds=seconds)
    else:
        evaluation = measure(*arguments, top_k=top_k, tta=tta, seconds=seconds)
    evaluation.skipped = pd.DataFrame(failed, columns=layout.SKIPPED_COLUMNS)
    evaluation.summary["num_skipped"] = len(failed)
    if model.unknown_threshold is not None:
        _measure_unknown(evaluation, model, [s.novelty for _, s in scored], (others, batch_size, reporter))
    return evaluation


def _measure_unknown(evaluation: Evaluation, model: Scorer, novelty: list[float], others: tuple) -> None:
    """Adds the detector's numbers to `evaluation` (`transfer.evaluation.unknown`): `others` is the
    paths outside the classes, the batch size and the reporter."""
    from transfer.evaluation.unknown import measure_unknown, unknown_table

    paths, batch_size, reporter = others
    other, failed = [], []
    if paths:
        with reporter.progress("Scoring the images outside the classes", total=len(paths)) as progress:
            for path, row in model.score_files(list(paths), batch_size):
                progress.advance()
                (failed.append((path, "", row)) if isinstance(row, str) else other.append((path, row.novelty)))
    in_class = pd.DataFrame({"path": evaluation.examples["path"], "novelty": novelty})
    other = pd.DataFrame(other, columns=["path", "novelty"])
    evaluation.summary |= measure_unknown(in_class, other, model.unknown_threshold)
    evaluation.unknown = unknown_table(in_class, other, model.unknown_threshold)
    evaluation.skipped = pd.concat([evaluation.skipped, pd.DataFrame(failed, columns=layout.SKIPPED_COLUMNS)], ignore_index=True)


def tta_views(pixels: tf.Tensor, size: int, mirror: bool) -> tf.Tensor:
    """`[N, S', S', 3]` images -> `[N, V, size, size, 3]` views: 4 corner and centre crops of
    `size`, and their mirror images when `mirror` (V = 10, else 5)."""
    import tensorflow as tf

    side = int(pixels.shape[1])
    far, centre = side - size, (side - size) // 2
    crops = [pixels[:, y : y + size, x : x + size] for y, x in ((0, 0), (0, far), (far, 0), (far, far), (centre, centre))]
    if mirror:
        crops += [tf.reverse(crop, axis=[2]) for crop in crops]
    return tf.stack(crops, axis=1)


def _tta_scores(model: Scorer, paths: Sequence[str], batch_size: int):
    import tensorflow as tf

    from transfer.data.folders import iter_decoded_batches

    size = model.image_size
    mirror = model.config.get("flip", "horizontal") in ("horizontal", "horizontal_and_vertical")
    source = math.ceil(size / CROP_FRACTION)
    for batch in iter_decoded_batches(paths, source, batch_size):
        yield from batch.failed
        if batch.paths:
            views = tta_views(tf.constant(batch.pixels), size, mirror)
            count = int(views.shape[1])
            flat = tf.reshape(views, (-1, size, size, 3))
            scored = model.score_pixels(flat.numpy())
            scores = scored.probabilities.reshape(len(batch.paths), count, -1).mean(axis=1)
            novelty = None if scored.novelty is None else scored.novelty.reshape(len(batch.paths), count).mean(axis=1)
            yield from zip(batch.paths, Scored(scores, novelty).rows())


def measure(
    class_names: Sequence[str],
    paths: Sequence[str],
    scores: np.ndarray,
    labels: Sequence[str],
    *,
    top_k: int = 3,
    tta: bool = False,
    seconds: float = 0.0,
) -> Evaluation:
    """The metrics of softmax `scores` (`[images, classes]`, in `class_names` order) against the
    true `labels` (class names) of the images at `paths` (`transfer.metrics.classification`), and
    one row per image."""
    from transfer.metrics import classification

    index = {name: i for i, name in enumerate(class_names)}
    truth = np.array([index[label] for label in labels])
    measured = classification.measure(scores, truth, class_names, top_k=top_k)
    scores, predicted = measured.scores, measured.predicted
    order = np.argsort(-scores, axis=1, kind="stable")[:, :3]  # classes, most probable first
    examples = pd.DataFrame({
        "path": paths,
        "label": list(labels),
        "predicted": [class_names[i] for i in predicted],
        "confidence": scores[np.arange(len(paths)), predicted],
        "top": ["; ".join(f"{class_names[i]} {row_scores[i]:.3f}" for i in row) for row, row_scores in zip(order, scores)],
        "correct": predicted == truth,
    })
    summary = {**measured.summary, "num_skipped": 0, "tta": tta,
               "images_per_second": round(len(paths) / seconds, 2) if seconds > 0 else None}
    skipped = pd.DataFrame(columns=layout.SKIPPED_COLUMNS)
    return Evaluation(list(class_names), examples, scores, skipped, summary, measured.per_class, measured.confusion, seconds)


def measure_multi_label(class_names: list[str], paths: Sequence[str], scores: np.ndarray, labels: Sequence[str], *,
                        thresholds: np.ndarray, tta: bool = False, seconds: float = 0.0) -> Evaluation:
    """The metrics of a multi-label model's `scores` (`[images, labels]` sigmoids) against the true
    label sets (`labels`, joined by `;`), its decisions taken at `thresholds` (`transfer.metrics.multilabel`)."""
    from transfer.metrics.multilabel import multi_hot
    from transfer.metrics.multilabel import decide, decision_counts, label_sets, measure as measure_labels, worst_mistake

    scores = np.asarray(scores, dtype=np.float64)
    targets = multi_hot(pd.Series(list(labels)), class_names)
    chosen = decide(scores, thresholds)
    summary, per_label = measure_labels(scores, targets, thresholds, class_names)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    examples = pd.DataFrame({
        "path": list(paths), "label": list(labels), "predicted": label_sets(chosen, class_names),
        "confidence": worst_mistake(scores, targets, thresholds),  # how sure its surest wrong decision was
        "top": ["; ".join(f"{class_names[i]} {row[i]:.3f}" for i in order) for order, row in zip(ranked, scores)],
        "correct": (chosen == targets.astype(bool)).all(axis=1),
    })
    per_label.loc["micro avg"] = [np.nan] * len(per_label.columns)
    per_label.loc["micro avg", ["f1", "support"]] = [summary["micro_f1"], targets.sum()]
    per_label.loc["macro avg", ["f1", "average_precision", "support"]] = [summary["macro_f1"], summary["mean_average_precision"], targets.sum()]
    per_label["support"] = per_label["support"].astype(int)
    confusion = decision_counts(chosen, targets, class_names)
    summary.update(accuracy=summary["exact_match"], multi_label=True, tta=tta, num_skipped=0,
                   images_per_second=round(len(paths) / seconds, 2) if seconds > 0 else None)
    return Evaluation(list(class_names), examples, scores, pd.DataFrame(columns=layout.SKIPPED_COLUMNS), summary,
                      per_label, confusion, seconds, multi_label=True)
