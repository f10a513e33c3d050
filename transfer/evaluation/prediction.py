"""`transfer predict`: top-k labels for image files, from a run directory, an export of any format
(`transfer.evaluation.scorers`) or `imagenet:NAME`.

TensorFlow is imported when a model is loaded, after the options and the inputs are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from transfer.core.errors import DataError
from transfer.models.imagenet import is_imagenet
from transfer.core.choices import MAX_BATCH_SIZE, UNKNOWN
from transfer.core.errors import require
from transfer.core.progress import SILENT, Reporter
from transfer.evaluation.scorers import load_scorer, model_labels
from transfer.data.sources import IMAGE_EXTENSIONS, special_file_kind, walk_images


#: The answer (`UNKNOWN`, from `transfer.core.choices`) for an image outside the classes (its novelty beyond the
#: run's detector's threshold), or whose top probability is below the minimum confidence; `Prediction.why_unknown` tells which.
#: The two reasons for `UNKNOWN`, in the order they are checked.
NOVEL, LOW_CONFIDENCE = "novel", "low_confidence"


@dataclass
class Prediction:
    """The most probable labels for one file, most probable first, and the answer (the top label,
    or `UNKNOWN`: beyond the detector's threshold or below the minimum confidence); or why it has none.

    For a multi-label model, `chosen` are the labels whose probability reaches their threshold (it
    may be empty), `labels` those and the top k, and `answer` the chosen ones joined by `;` (or
    `UNKNOWN` for a novel image). `novelty` is the detector's score (`None` without one), and
    `why_unknown` `NOVEL` or `LOW_CONFIDENCE` where the answer is `UNKNOWN`."""

    path: str
    labels: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    answer: str | None = None
    error: str | None = None
    chosen: list[str] | None = None
    novelty: float | None = None
    why_unknown: str | None = None

    def to_dict(self) -> dict:
        entry = {
            "path": self.path,
            "answer": self.answer,
            **({"labels": self.chosen} if self.chosen is not None else {}),
            "predictions": [
                {"label": label, "probability": probability}
                for label, probability in zip(self.labels, self.probabilities)
            ],
            **({"novelty": self.novelty} if self.novelty is not None else {}),
            **({"why_unknown": self.why_unknown} if self.why_unknown is not None else {}),
        }
        return entry if self.error is None else {**entry, "error": self.error}


def resolve_min_confidence(min_confidence: float | None, labels: Sequence[str], config: dict) -> float:
    """The threshold below which the answer is `UNKNOWN`: `min_confidence`, else the one an export
    was made with (its `config.json`), else 0.

    Raises:
        InvalidOptionError: out of [0, 1), or a threshold for a model that has a class named `UNKNOWN`.
    """
    if min_confidence is None:
        min_confidence = config.get("export", {}).get("min_confidence", 0.0)
    check_min_confidence(min_confidence)
    require(min_confidence == 0 or UNKNOWN not in labels, "--min-confidence", min_confidence,
            f"0 for this model: it has a class named {UNKNOWN!r}, the answer for images below the threshold")
    return float(min_confidence)


def check_min_confidence(min_confidence: float | None) -> None:
    """Raises InvalidOptionError unless `min_confidence` is `None` or in [0, 1)."""
    require(min_confidence is None or 0 <= min_confidence < 1, "--min-confidence", min_confidence,
            "a probability from 0 up to 1 (not included)")


def answer(label: str, probability: float, min_confidence: float) -> str:
    """The top `label`, or `UNKNOWN` where its `probability` is below `min_confidence`."""
    return label if probability >= min_confidence else UNKNOWN


def collect_images(inputs: Sequence[Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files named directly, and those found recursively in named folders and archives, in sorted order;
    and the files of those folders that are not read, with the reason (`transfer.data.sources`)."""
    from transfer.data.archives import is_archive, resolve_data

    paths, skipped = [], []
    for item in map(Path, inputs):
        if is_archive(item):  # a .zip or .tar(.gz) of images reads as the folder it holds
            item = resolve_data(item)
        if item.is_dir():
            images, others = walk_images(item)  # as training lists a class folder
            paths += images
            skipped += others
        elif item.is_file():
            paths.append(str(item))  # named by the user: read whatever its extension says
        elif special_file_kind(item):
            skipped.append((str(item), f"{special_file_kind(item)}, not a regular file (only files are read)"))
        else:
            raise DataError(f"{item} does not exist; pass image files or folders of images.")
    return paths, skipped


def novelty_threshold(model_path: Path | str) -> float | None:
    """The novelty score beyond which a run or an export answers `UNKNOWN` (`None` without a detector)."""
    from transfer.evaluation.scorers import unknown_threshold
    from transfer.outputs.artifacts import open_model

    return None if is_imagenet(model_path) else unknown_threshold(open_model(model_path).config())


def resolve_top_k(top_k: int | None, classes: int, reporter: Reporter = SILENT) -> int:
    """Labels per image: `top_k`, or min(3, classes) when `None`; a `top_k` above the number of
    classes means all of them, which every command says once (predict, evaluate, export, serve).

    Raises:
        InvalidOptionError: `top_k` is below 1.
    """
    require(top_k is None or top_k >= 1, "--top-k", top_k, "an integer >= 1")
    if top_k is not None and top_k > classes:
        reporter.message(f"--top-k {top_k}: the model has {classes} classes, so all {classes} are shown.")
    return min(3 if top_k is None else top_k, classes)


def predict(
    model_path: Path,
    inputs: Sequence[Path],
    *,
    top_k: int | None = None,
    batch_size: int = 32,
    min_confidence: float | None = None,
    threshold: float | None = None,
    weights: str | None = None,
    reporter: Reporter = SILENT,
) -> Iterator[Prediction]:
    """Yields a `Prediction` per file, as soon as its batch is scored, in sorted order within each folder.

    Folders are streamed in batches, so memory is bounded by `batch_size`. Files that cannot be
    decoded, and files of the folders that are not images, yield a `Prediction` with `error` set.
    A multi-label model gives each image the labels that reach their threshold (the run's, chosen
    on validation, or `threshold` for all).

    Raises:
        InvalidOptionError: `top_k`, `batch_size` or `min_confidence` out of range.
        DataError: an input that does not exist, or no image file at all.
    """
    from transfer.metrics.multilabel import check_threshold

    require(top_k is None or top_k >= 1, "--top-k", top_k, "an integer >= 1")
    check_min_confidence(min_confidence)
    check_threshold(threshold)
    require(1 <= batch_size <= MAX_BATCH_SIZE, "--batch-size", batch_size, f"an integer between 1 and {MAX_BATCH_SIZE}")
    paths, skipped = collect_images(inputs)
    if not paths:
        raise DataError(
            f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, inputs))}"
            + (f"; {len(skipped)} other file(s) left out, e.g. {skipped[0][0]}: {skipped[0][1]}." if skipped else ".")
        )
    require(weights is None or is_imagenet(model_path), "--weights", weights,
            "given only with imagenet:NAME (a run or an export has its own)")
    k = resolve_top_k(top_k, len(model_labels(model_path)), reporter)  # before the model is loaded: labels.txt says
    model = load_scorer(model_path, weights)
    decide = decision_rule(model.labels, model.config, min_confidence=min_confidence, threshold=threshold,
                           novelty=model.unknown_threshold)
    for path, reason in skipped:
        yield Prediction(path, error=reason)
    with reporter.progress("Predicting", total=len(paths)) as progress:
        for path, scores in model.score_files(paths, batch_size):
            progress.advance()
            yield Prediction(path, error=scores) if isinstance(scores, str) else decide(path, scores, k)


def decision_rule(labels: list[str], config: dict, *, min_confidence: float | None, threshold: float | None,
                  novelty: float | None = None):
    """`(path, scored, k) -> Prediction` for a scorer's `Scored` row (or a row of probabilities): `UNKNOWN` where its novelty is beyond
    `novelty` (the detector's threshold), else the top label or `UNKNOWN` below `min_confidence`; for a
    multi-label model (`transfer.metrics.multilabel`), every label that reaches its threshold.

    Raises:
        InvalidOptionError: an option of the other kind of model, or out of range.
    """
    from transfer.metrics.multilabel import decide, is_multi_label, thresholds_of

    def novel(scored) -> bool:
        return novelty is not None and getattr(scored, "novelty", None) is not None and scored.novelty > novelty

    if not is_multi_label(config):
        require(threshold is None, "--threshold", threshold, "given only for a multi-label model (this one picks one class; "
                "--min-confidence sets when it answers 'unknown')")
        floor = resolve_min_confidence(min_confidence, labels, config)

        def single(path: str, scored, k: int) -> Prediction:
            scores = getattr(scored, "probabilities", scored)  # a `Scored` row, or its probabilities alone
            order = np.argsort(-scores, kind="stable")[:k]
            top, probabilities = [labels[i] for i in order], [float(scores[i]) for i in order]
            why = NOVEL if novel(scored) else LOW_CONFIDENCE if probabilities[0] < floor else None
            return Prediction(path, top, probabilities, UNKNOWN if why else top[0], novelty=getattr(scored, "novelty", None), why_unknown=why)

        return single
    require(min_confidence is None, "--min-confidence", min_confidence, "given only for a single-label model (this one is "
            "multi-label: each label has its threshold, and --threshold sets one for all)")
    cuts = thresholds_of(config, labels, threshold)

    def multi(path: str, scored, k: int) -> Prediction:
        scores = getattr(scored, "probabilities", scored)
        chosen = decide(scores, cuts)
        order = [i for i in np.argsort(-scores, kind="stable") if chosen[i] or i in np.argsort(-scores, kind="stable")[:k]]
        names = [labels[i] for i in order if chosen[i]]
        why = NOVEL if novel(scored) else None
        return Prediction(path, [labels[i] for i in order], [float(scores[i]) for i in order],
                          UNKNOWN if why else ";".join(names), chosen=names, novelty=getattr(scored, "novelty", None), why_unknown=why)

    return multi
