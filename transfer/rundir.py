"""The files of a run directory and of an export, and writing them safely.

A run directory holds `model.keras`, `labels.txt`, `config.json`, `history.csv`, `curves.png`,
`split.csv`, `skipped.csv`, `duplicates.csv`, `metrics.json` and `checkpoint.keras`. Outputs are
written into a hidden staging folder beside the destination (`.NAME.partial`) and renamed into
place when complete, so a half-written run is never mistaken for a finished one, and an existing
output is replaced only with `force`. An interrupted training leaves its staging folder behind,
with the best checkpoint so far and what `transfer train --resume` needs to go on.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

from transfer.errors import ModelLoadError, OutputExistsError

MODEL = "model.keras"
CHECKPOINT = "checkpoint.keras"
LABELS = "labels.txt"
CONFIG = "config.json"
HISTORY = "history.csv"
CURVES = "curves.png"
SPLIT = "split.csv"
SKIPPED = "skipped.csv"
DUPLICATES = "duplicates.csv"
RESUME_STATE = "resume.json"
METRICS = "metrics.json"
SAVED_MODEL = "saved_model.pb"

#: A folder holding one of these files is an output of `transfer` that `force` may replace.
_MARKERS = (CONFIG, SAVED_MODEL)


def check_destination(path: Path, force: bool) -> None:
    """Refuses a destination that exists and is not empty, unless `force` and it is ours.

    Raises:
        OutputExistsError: with what is there and what to do.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is a file; choose another output folder.")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not force:
        raise OutputExistsError(
            f"{path} already exists and is not empty. Choose another output folder, or pass --force "
            f"to replace it."
        )
    if not any((path / marker).exists() for marker in _MARKERS):
        raise OutputExistsError(
            f"{path} is not empty and is not a transfer run or export (no {' or '.join(_MARKERS)}), "
            f"so --force will not delete it. Choose another output folder."
        )


def partial_dir(path: Path, worker: int | None = None) -> Path:
    """The hidden staging folder beside `path` where `path` is written until complete.

    A non-chief worker of a multi-worker run (`worker` = its index) keeps its own copy in
    `.NAME.worker-K.partial` instead, deleted when training ends; only the chief writes `path`.
    """
    path = Path(path)
    return path.parent / (f".{path.name}.partial" if worker is None else f".{path.name}.worker-{worker}.partial")


def check_no_interrupted_run(path: Path, force: bool, worker: int | None = None) -> None:
    """Refuses to start over an interrupted training of `path` unless `force`.

    Raises:
        OutputExistsError: naming the interrupted run and how to resume it.
    """
    partial = partial_dir(path, worker)
    if (partial / RESUME_STATE).is_file() and not force:
        raise OutputExistsError(
            f"An interrupted training of {path} is in {partial}. Continue it with `transfer train "
            f"--resume {path}`, or pass --force to discard it and start over."
        )


def staging_dir(path: Path, worker: int | None = None) -> Path:
    """An empty hidden folder beside `path` to write into before `publish` (see `partial_dir`)."""
    staging = partial_dir(path, worker)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, path: Path) -> None:
    """Moves a completed staging folder to `path`, replacing what `check_destination` allowed.

    An existing output is first renamed aside, so at every moment either it or the new one is
    complete under its name.
    """
    path = Path(path)
    old = path.parent / f".{path.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if path.is_dir():
        path.rename(old)
    staging.rename(path)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to, renamed to `path` when the block succeeds, so a
    reader never sees half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{path.suffix}")
    yield temporary
    temporary.replace(path)


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_table(path: Path) -> pd.DataFrame:
    """One of the run's CSV files with every value as written (class names such as `0` stay text)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_labels(path: Path, class_names: list[str]) -> None:
    Path(path).write_text("".join(f"{name}\n" for name in class_names))


def read_labels(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: a run directory or export needs its {LABELS}.")
    return [line for line in path.read_text().splitlines() if line]
