"""`transfer suggest`: which photos of a folder to label next, in order, with the head's suggestion and why
each was chosen (`transfer.metrics.acquisition`).

What is labelled so far comes from one of two sources:

- a run directory (`transfer train`): the labelled images of its `split.csv` (train and val) with their
  labels; the features are the run's own frozen extractor's, the classes its `labels.txt`.
- a labelling project: a folder holding
  - `labels.csv`, columns `path,label`: one labelled photo a row (a path relative to the project folder,
    or absolute; rows may be added as labelling goes on, and an empty file has the header alone);
  - `project.json`: `{"model": MODEL}`, where MODEL is what gives the features: a run directory,
    `imagenet:NAME`, a Keras model file or a keras-hub preset (as `transfer features` takes them); and
    optionally `"classes": [...]`, every class's name (else the classes of `labels.csv`).

Photos of PHOTOS already labelled (the same file, or the same content) are left out; photos that
cannot be read are listed with the reason. The features go through the feature cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfer.core.errors import DataError, InvalidOptionError, OutputExistsError
from transfer.core.progress import SILENT, Reporter
from transfer.outputs import publishing

#: The columns of the suggestions file, its first line: how a file written by `suggest` is recognized.
COLUMNS = ("path", "suggested_label", "confidence", "reason")
PROJECT_LABELS, PROJECT_CONFIG = "labels.csv", "project.json"


@dataclass(frozen=True)
class Suggestions:
    """What `suggest` wrote: the file, its rows (`COLUMNS`), the photos left out as unreadable
    (`[(path, reason)]`), and how many were already labelled."""

    path: Path
    rows: list[dict]
    skipped: list[tuple[str, str]]
    already_labelled: int


def suggest(source: Path, photos: Path, out: Path, *, n: int = 20, strategy: str = "auto", force: bool = False,
            cache_dir: Path | None = None, reporter: Reporter = SILENT) -> Suggestions:
    """Writes to `out` (CSV, `COLUMNS`) the `n` photos under `photos` to label next, by `strategy`,
    given what `source` (a run or a project, see the module) has labelled.

    Raises:
        InvalidOptionError: `n` below 1, an unknown strategy.
        OutputExistsError: `out` is a folder, a file `suggest` did not write, or one it did without `force`.
        DataError: `source` is neither a run nor a project, or PHOTOS has no readable photo left to label.
    """
    from transfer.metrics.acquisition import STRATEGIES

    if n < 1:
        raise InvalidOptionError(f"--n {n}: the number of photos to suggest must be 1 or more.")
    if strategy not in STRATEGIES:
        raise InvalidOptionError(f"--strategy {strategy}: expected one of {', '.join(STRATEGIES)}.")
    out = Path(out)
    check_output(out, force)
    model, labelled, classes = labelled_set(Path(source))
    return _suggest(model, labelled, classes, Path(photos), out, (n, strategy, cache_dir, reporter))


def _suggest(model, labelled: list[tuple[str, str]], classes: list[str], photos: Path, out: Path, how) -> Suggestions:
    from transfer.data.folders import find_unreadable
    from transfer.data.sources import walk_images
    from transfer.metrics.acquisition import next_to_label
    from transfer.training.features import FeatureCache, default_cache_dir, extract_features, model_feature_extractor

    n, strategy, cache_dir, reporter = how
    if not photos.is_dir():
        raise DataError(f"PHOTOS {photos} is not a folder; give the folder of photos to label.")
    images, skipped = walk_images(photos)
    extractor, size = model_feature_extractor(model, reporter=reporter)
    unreadable = find_unreadable(images, size, reporter)
    skipped = [*skipped, *unreadable.items()]
    done = {str(Path(path).resolve()) for path, _ in labelled} | {publishing.sha256(path) for path, _ in labelled if Path(path).is_file()}
    images = [path for path in images if path not in unreadable]
    pool = [path for path in images if str(Path(path).resolve()) not in done and publishing.sha256(path) not in done]
    if not pool:
        raise DataError(f"{photos} has no photo left to label: {len(images)} readable, all of them labelled already"
                        f"{f', {len(skipped)} left out' if skipped else ''}. Add photos to label, or give another folder.")
    present = [(path, label) for path, label in labelled if Path(path).is_file()]
    for path, _ in sorted(set(labelled) - set(present)):
        reporter.warning(f"{path}: a labelled image that is no longer there; the order goes on without it.")
    cache = FeatureCache(cache_dir or default_cache_dir(), extractor, size)
    features = extract_features(extractor, pool + [p for p, _ in present], 32, cache=cache, reporter=reporter,
                                description="Features of the photos")
    labels = np.array([classes.index(label) for _, label in present], dtype=int)
    picks = next_to_label(features[: len(pool)], features[len(pool):], labels, n, strategy=strategy, classes=classes)
    rows = [{"path": pool[p.index], "suggested_label": "" if p.suggested is None else classes[p.suggested],
             "confidence": "" if p.confidence is None else f"{p.confidence:.3f}", "reason": p.reason} for p in picks]
    write_suggestions(out, rows)
    return Suggestions(out, rows, skipped, len(images) - len(pool))


def labelled_set(source: Path) -> tuple[str, list[tuple[str, str]], list[str]]:
    """`(model reference for the features, [(path, label)], class names)` of a run or a project.

    Raises:
        DataError: neither a run (model.keras) nor a project (labels.csv and project.json), or a
            project whose files are malformed, or a multi-label run.
    """
    from transfer.outputs.layout import MODEL

    if (source / MODEL).is_file():
        from transfer.outputs.artifacts import Run

        run = Run.open(source)
        if run.config().get("multi_label"):
            raise DataError(f"{source} is a multi-label run; suggest orders photos for one label each. Give a single-label run or a project.")
        split = run.split()
        classes = run.labels()
        return str(source), [(str(p), str(label)) for p, label in zip(split["path"], split["label"]) if str(label) in classes], classes
    if not (source / PROJECT_LABELS).is_file() or not (source / PROJECT_CONFIG).is_file():
        raise DataError(f"{source} is neither a run directory (no model.keras) nor a labelling project (no {PROJECT_LABELS} "
                        f"and {PROJECT_CONFIG}); give a folder written by `transfer train`, or a project folder.")
    return _project(source)


def _project(folder: Path) -> tuple[str, list[tuple[str, str]], list[str]]:
    try:
        config = publishing.read_json(folder / PROJECT_CONFIG)
    except ValueError as error:
        raise DataError(f"{folder / PROJECT_CONFIG} is not valid JSON ({error}); it should read {{\"model\": MODEL}}.") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise DataError(f"{folder / PROJECT_CONFIG} names no model; it should read {{\"model\": MODEL}} (a run, imagenet:NAME or a model file).")
    table = publishing.read_table(folder / PROJECT_LABELS)
    if list(table.columns[:2]) != ["path", "label"]:
        raise DataError(f"{folder / PROJECT_LABELS} has columns {list(table.columns)}; expected path,label.")
    labelled = [(str(p if Path(str(p)).is_absolute() else folder / str(p)), str(label)) for p, label in zip(table["path"], table["label"])]
    classes = [str(c) for c in config.get("classes") or sorted({label for _, label in labelled})]
    unknown = sorted({label for _, label in labelled} - set(classes))
    if unknown:
        raise DataError(f"{folder / PROJECT_LABELS} has labels not among the project's classes: {', '.join(unknown)}; add them to \"classes\" in {PROJECT_CONFIG}.")
    model = config["model"]
    if not model.startswith(("imagenet:", "keras-hub:")) and not Path(model).is_absolute():
        model = str(folder / model)
    return model, labelled, classes


def check_output(out: Path, force: bool) -> None:
    """Refuses a folder, a file `suggest` did not write (its first line is not `COLUMNS`), and one it did
    without `force`; checks the folder can be written."""
    if out.is_dir():
        raise OutputExistsError(f"--out {out} is a folder; suggest writes one CSV file: pass a file name such as {out / 'next.csv'}.")
    if out.suffix.lower() != ".csv":
        raise InvalidOptionError(f"--out {out}: suggest writes CSV; received a name ending in {out.suffix or 'no extension'!r}. Name the file {out.stem}.csv.")
    if out.exists():
        try:
            with open(out, encoding="utf-8", errors="replace") as file:
                ours = file.readline().strip() == ",".join(COLUMNS)
        except OSError:
            ours = False
        if not ours:
            raise OutputExistsError(f"{out} already exists and was not written by transfer suggest; --force replaces only "
                                    f"an earlier suggestions file, so it is left as it is. Choose another --out.")
        if not force:
            raise OutputExistsError(f"{out} already exists (earlier suggestions). Choose another --out, or pass --force to replace it.")
    publishing.check_writable(out.parent if str(out.parent) else Path("."))


def write_suggestions(out: Path, rows: list[dict]) -> None:
    """The rows as CSV (`COLUMNS`), through a temporary name and a rename."""
    import pandas as pd

    publishing.write_table(out, pd.DataFrame(rows, columns=list(COLUMNS)))
