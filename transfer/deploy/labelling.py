"""`transfer label`: a local page to label photos in the order most worth labelling, into a labelling
project (`transfer.selection.suggest` describes its files: `labels.csv`, `path,label`, and `project.json`,
`{"model": MODEL, "classes": [...]}`).

Every photo's pooled features are computed once (through the feature cache); the page then shows one
photo at a time in `transfer.metrics.acquisition.next_to_label`'s order (`auto`: representative first,
then uncertain and not redundant) with why it was chosen and the head's suggestion. Every label, undo
and new class is written at once, through a temporary name and a rename, so a killed server loses
nothing and reopening the project resumes where it was. After every `REFIT_EVERY` labels the order,
the suggestions and the cross-validated accuracy estimate are recomputed on a background thread while
the page goes on from the order it has.

With `--audit AUDIT_DIR` (what `transfer audit` wrote), its flagged labels come first, showing the given
and the suggested label: a key relabels the photo (its row in `labels.csv` is replaced), Enter takes the
audit's suggestion, s keeps the given label. The photos reviewed so are remembered in `project.json`
(`"audit_reviewed"`), so reopening does not ask again. Paths in `labels.csv` are absolute, so
`transfer train --manifest PROJECT/labels.csv` reads it as it is.

The state and its actions are `transfer.deploy.label_state`; the application (routes and page)
`transfer.deploy.label_routes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transfer.core.errors import DataError, InvalidOptionError
from transfer.core.progress import SILENT, Reporter
from transfer.deploy.label_state import CONFIG, LABELS, REVIEWED, Labelling
from transfer.outputs import publishing

DEFAULT_MODEL = "imagenet:efficientnet_lite0"
DEFAULT_PORT = 8502


@dataclass(frozen=True)
class LabelOptions:
    """What `transfer label` is told besides PHOTOS and PROJECT."""

    classes: tuple[str, ...] = ()
    manifest: Path | None = None
    model: str | None = None
    audit: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    cache_dir: Path | None = None


def label(photos: Path, folder: Path, options: LabelOptions, reporter: Reporter = SILENT) -> None:
    """Opens (or creates) the project `folder` on `photos` and serves its page until interrupted.

    Raises:
        InvalidOptionError, DataError, OutputExistsError: see `open_project`; a port out of range.
        OutputLocationError: the address cannot be listened on.
        DependencyMissingError: the `serve` extra is not installed.
    """
    from transfer.core import extras
    from transfer.core.errors import require
    from transfer.deploy.serving import check_address, is_loopback

    require(1 <= options.port <= 65535, "--port", options.port, "a TCP port between 1 and 65535")
    extras.require("serve")
    _check_paths(Path(photos), Path(folder))
    check_address(options.host, options.port)
    labelling = open_project(photos, folder, options, reporter)
    if not is_loopback(options.host):
        reporter.warning(f"Listening on {options.host}, beyond this machine, without authentication: anyone who can reach it "
                         f"can see the photos and change the labels.")
    import uvicorn

    from transfer.deploy.label_routes import create_app

    where = f"http://{options.host if ':' not in options.host else f'[{options.host}]'}:{options.port}/"
    reporter.message(f"{len(labelling.labels)} labelled, {len(labelling._pool())} to go; labelling at {where} "
                     f"(every label is in {folder / LABELS} at once); Ctrl-C stops.")
    uvicorn.Server(uvicorn.Config(create_app(labelling), host=options.host, port=options.port, log_level="warning")).run()


def open_project(photos: Path, folder: Path, options: LabelOptions, reporter: Reporter = SILENT) -> Labelling:
    """The project `folder` (created, seeded with `options.manifest` and `options.classes`, or reopened)
    with the features of every readable photo of `photos`, of its labelled photos and of the audit's.

    Raises:
        DataError: PHOTOS is not a folder or has no readable photo; a malformed project, manifest or audit.
        InvalidOptionError: --manifest or another --model given for a project that has its own.
        OutputExistsError: PROJECT is a folder of other files.
    """
    import os

    from transfer.data.folders import find_unreadable
    from transfer.data.sources import walk_images
    from transfer.training.features import FeatureCache, default_cache_dir, extract_features, model_feature_extractor

    photos, folder = Path(photos), Path(folder)
    _check_paths(photos, folder)
    audit = read_audit(Path(options.audit)) if options.audit else []
    model, labelled, classes, reviewed = _read_or_create(folder, options, audit)
    if (folder / CONFIG).is_file() and (added := [name for name in options.classes if name not in _saved_classes(folder)]):
        reporter.message(f"Classes added to {folder / CONFIG}: {', '.join(added)}.")
    images, skipped = walk_images(photos)
    extractor, size = model_feature_extractor(model, reporter=reporter)
    known = list(dict.fromkeys([os.path.abspath(p) for p in images] + [p for p, _ in labelled if os.path.isfile(p)]
                               + [row["path"] for row in audit if os.path.isfile(row["path"])]))
    unreadable = find_unreadable(known, size, reporter)
    skipped = [*skipped, *unreadable.items()]
    for path, _ in labelled:
        if not os.path.isfile(path):
            skipped.append((path, f"labelled in {LABELS} but no longer there (its row is kept)"))
    paths = [path for path in known if path not in unreadable]
    if not paths:
        raise DataError(f"{photos} has no photo that can be read ({len(skipped)} left out); give the folder of photos to label.")
    cache = FeatureCache(Path(options.cache_dir) if options.cache_dir else default_cache_dir(), extractor, size)
    features = extract_features(extractor, paths, 32, cache=cache, reporter=reporter, description="Features of the photos")
    for path, reason in skipped:
        reporter.warning(f"skipped {path}: {reason}")
    for name in dict.fromkeys(value for row in audit for value in (row["given"], row["suggested"])):
        if name not in classes:
            classes.append(name)
    labelling = Labelling(folder, model, paths, features, classes, dict(labelled), unreadable=skipped,
                          audit=[row for row in audit if row["path"] in set(paths)], reviewed=reviewed)
    labelling._save()
    return labelling


def _read_or_create(folder: Path, options: LabelOptions, audit: list[dict]):
    """`(model, [(absolute path, label)], classes, audit photos reviewed)` of the project, read or new."""
    import os

    from transfer.selection.suggest import labelled_set

    if (folder / CONFIG).is_file():
        model, labelled, classes = labelled_set(folder)
        if options.manifest is not None:
            raise InvalidOptionError(f"--manifest {options.manifest}: {folder} is a project already, with its {LABELS}; leave "
                                     f"--manifest out to go on labelling it, or give a new --out to start from the manifest.")
        if options.model is not None and options.model != model:
            raise InvalidOptionError(f"--model {options.model}: {folder} was labelled with {model}; leave --model out, or give a new --out.")
        reviewed = set(publishing.read_json(folder / CONFIG).get(REVIEWED) or [])
        labelled = [(os.path.abspath(p), label) for p, label in labelled]
    else:
        model = options.model or DEFAULT_MODEL
        if not model.startswith(("imagenet:", "keras-hub:")):
            model = os.path.abspath(model)
        seed = options.manifest or (Path(options.audit) / "original.csv" if audit else None)
        labelled, classes, reviewed = (read_seed(Path(seed)) if seed else []), [], set()
        folder.mkdir(parents=True, exist_ok=True)
    for name in [*options.classes, *(label for _, label in labelled)]:
        if name not in classes:
            classes.append(name)
    return model, labelled, classes, reviewed


def _saved_classes(folder: Path) -> list[str]:
    return list(publishing.read_json(folder / CONFIG).get("classes") or [])


def _check_paths(photos: Path, folder: Path) -> None:
    """PHOTOS is a folder; PROJECT is a project, or new, or an empty folder."""
    from transfer.core.errors import OutputExistsError

    if not photos.is_dir():
        raise DataError(f"PHOTOS {photos} is not a folder; give the folder of photos to label.")
    if not (folder / CONFIG).is_file() and folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputExistsError(f"--out {folder} exists and is not a labelling project (no {CONFIG}); give a new or empty folder.")


def read_seed(manifest: Path) -> list[tuple[str, str]]:
    """`[(absolute path, label)]` of a `path,label[,...]` CSV (relative paths from its folder).

    Raises:
        DataError: the file is missing or malformed, a row lacks a label, or names a photo that is not there.
    """
    import os

    try:
        table = publishing.read_table(manifest)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"--manifest {manifest} cannot be read as CSV ({error.__class__.__name__}); expected columns path,label.") from None
    if not {"path", "label"} <= set(table.columns):
        raise DataError(f"--manifest {manifest} has columns {list(table.columns)}; expected path,label.")
    rows = [(os.path.abspath(manifest.resolve().parent / p.strip()), label.strip()) for p, label in zip(table["path"], table["label"])]
    bad = [f"line {line}" for line, (path, label) in enumerate(rows, start=2) if not label or not os.path.isfile(path)]
    if bad:
        raise DataError(f"--manifest {manifest}: {len(bad)} row(s) without a label or whose photo is not there ({', '.join(bad[:5])}).")
    return list(dict(rows).items())


def read_audit(folder: Path) -> list[dict]:
    """The label issues of an audit folder (`audit.csv`: path, given, suggested, score), surest first.

    Raises:
        DataError: no audit.csv there, or one without those columns.
    """
    import os

    table_path = folder / "audit.csv"
    if not table_path.is_file():
        raise DataError(f"--audit {folder} holds no audit.csv; give the folder `transfer audit` wrote.")
    table = publishing.read_table(table_path)
    if not {"path", "given", "suggested", "kind", "score"} <= set(table.columns):
        raise DataError(f"{table_path} has columns {list(table.columns)}; expected those of `transfer audit` (path, given, suggested, kind, score).")
    issues = table[table["kind"] == "label_issue"]
    return [{"path": os.path.abspath(folder / p), "given": g, "suggested": s, "score": float(score or 0)}
            for p, g, s, score in zip(issues["path"], issues["given"], issues["suggested"], issues["score"])]
