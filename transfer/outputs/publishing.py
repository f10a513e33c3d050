"""Writing outputs safely: who owns an output, checks before the long work, staging and atomic writes.

**Ownership.** Every output folder's first file is a marker, `.transfer.json` (kind, version,
creation time); a report carries it as `<meta name="generator" content="transfer report ...">`.
`force` replaces only an earlier output of the same kind that carries the marker, and refuses
anything else, naming what is in the way. `check_destination` says so before any long work, and
also refuses an output inside the data folder and a location that cannot be written.

Folders are written into a hidden staging folder beside the destination (`.NAME.partial`) and
renamed into place when complete, so a half-written output is never mistaken for a finished one; an
existing output is renamed aside first and deleted last, and a failed command removes its staging
folder. Single files (JSON, CSV, HTML) go through a temporary name and a rename. The small readers
and writers of those files (JSON, CSV, labels, a file's SHA-256) are here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from transfer.core.errors import InvalidOptionError, ModelLoadError, OutputExistsError, OutputLocationError
from transfer.outputs.layout import LABELS, MARKER, NESTED_KINDS, PARQUET_MARKER, REPORT_GENERATOR, RESUME_STATE, SINGLE_FILES, partial_dir

if TYPE_CHECKING:  # pandas is imported where tables are read: the command line starts without it
    import filelock
    import pandas as pd


def marker_of(path: Path) -> dict | None:
    """The ownership marker of an output written by `transfer`, or `None` for anything else."""
    path = Path(path)
    if path.is_dir():
        try:
            marker = read_json(path / MARKER)
        except (OSError, ValueError):
            return None
        return marker if isinstance(marker, dict) and marker.get("tool") == "transfer" else None
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            marker = json.loads(pq.read_schema(path).metadata[PARQUET_MARKER])
        except Exception:  # no pyarrow, not Parquet, no marker: not ours either way
            return None
        return marker if marker.get("tool") == "transfer" else None
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            head = file.read(4096)
    except OSError:
        return None
    return {"tool": "transfer", "kind": "report"} if f'<meta name="generator" content="{REPORT_GENERATOR}' in head else None


def marker_json(kind: str) -> str:
    """The ownership marker of a `kind` output, as JSON (kind, tool version, creation time)."""
    from transfer.core.version import __version__

    return json.dumps({
        "tool": "transfer", "kind": kind, "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def output_file(value: str | Path, *, name: str, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """The file a one-file output (`report`, `features`) is written to: `value` itself, or `name`
    inside it where it is a folder (it exists as one, or ends in `/`: a folder to create).

    Raises:
        InvalidOptionError: a file name whose extension says another format than the output's.
    """
    text = str(value)
    if text.endswith(("/", "\\")) or Path(text).is_dir():
        return Path(text) / name
    path = Path(text)
    if path.suffix.lower() not in suffixes:
        raise InvalidOptionError(
            f"{option} {text}: this writes {suffixes[0].lstrip('.').upper()} "
            f"({', '.join(suffixes)}); received a name ending in {path.suffix or 'no extension'!r}. Name the file "
            f"{path.stem}{suffixes[0]}, or give a folder (ending in /) to write {name} into."
        )
    return path


def check_destination(path: Path, *, kind: str, force: bool, data: tuple[Path | None, ...] = ()) -> None:
    """Checks, before any long work, that the `kind` output can be written at `path`.

    - It is not inside one of the `data` folders (the next run on that folder would read it).
    - Nothing is there, or an empty folder; or, with `force`, an earlier output of the same kind
      written by `transfer` (it carries the marker). Anything else is refused, naming what is there.
    - The location can be written: its parent folder is created, and a file is created in it.

    Raises:
        OutputExistsError: something that is not ours, or ours without `force`, is in the way.
        InvalidOptionError: the output would be inside the data.
        OutputLocationError: the location cannot be written (read-only, permissions, no space).
    """
    path = Path(path)
    check_outside(path, data)
    single_file = kind in SINGLE_FILES
    if single_file and path.is_dir():
        example = path / ("report.html" if kind == "report" else "features.parquet")
        raise OutputExistsError(f"{path} is a folder; the {kind} output is one file: pass a file name such as {example}.")
    if not single_file and path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is a file; the {kind} is a folder: choose another name.")
    if path.is_symlink():
        raise OutputExistsError(f"{path} is a symbolic link; pass the folder it points to, or another name.")
    occupied = path.is_file() if single_file else (path.is_dir() and any(path.iterdir()))
    if occupied:
        marker = marker_of(path)
        what = f"an earlier transfer {marker.get('kind')}" if marker else f"not written by transfer ({_contents(path)})"
        if marker is None or marker.get("kind") != kind:
            raise OutputExistsError(
                f"{path} already exists and is {what}; --force replaces only an earlier transfer {kind}, so it is "
                f"left as it is. Choose another output name."
            )
        if not force:
            elsewhere = "another OUT folder" if kind == "dataset" else "another --out"
            raise OutputExistsError(f"{path} already exists ({what}). Choose {elsewhere}, or pass --force to replace it.")
        foreign = [] if single_file else foreign_files(path)
        if foreign:
            shown = ", ".join(str(p.relative_to(path)) for p in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputExistsError(
                f"{path} is an earlier transfer {kind}, but it also holds what transfer did not write ({shown}); "
                f"--force would delete it, so nothing is replaced. Move those out first, or choose another name."
            )
    check_writable(path.parent)


def check_outside(path: Path, data: tuple[Path | str | None, ...]) -> None:
    """Refuses an output inside one of the `data` folders, where the next run on them would read it.

    Raises:
        InvalidOptionError: naming the folder and a place outside it.
    """
    for folder in filter(None, data):
        if _is_within(Path(path), Path(folder)):
            outside = Path(folder).resolve().parent / f"{Path(folder).resolve().name}-outputs" / Path(path).name
            raise InvalidOptionError(
                f"The output {path} is inside the data folder {folder}; the next run on that folder would read "
                f"it as data. Write it outside, e.g. {outside}."
            )


def foreign_files(path: Path) -> list[Path]:
    """The files under an output folder that `transfer` did not write there: not listed in its
    marker, and not inside an output that may sit in it (`NESTED_KINDS`) or a report of its own."""
    marker = marker_of(path) or {}
    return _foreign(Path(path), Path(path), set(marker.get("files", [])), NESTED_KINDS.get(marker.get("kind"), ()))


def _foreign(folder: Path, root: Path, written: set[str], inside: tuple[str, ...]) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            nested = marker_of(entry)
            if nested is None:
                found += _foreign(entry, root, written, inside)
            elif nested.get("kind") in inside:
                found += foreign_files(entry)
            else:
                found.append(entry)  # another output put there: not this one's to delete
        elif str(entry.relative_to(root)) not in written and entry != root / MARKER and not (
            entry.suffix == ".html" and marker_of(entry)
        ):
            found.append(entry)
    return found


def check_writable(folder: Path) -> None:
    """Knows now, before the long work, that `folder` can be created and written: a file is created
    and removed in `folder`, or where it does not exist yet in the nearest folder above it that does
    (nothing is created that a refusal would leave behind).

    Raises:
        OutputLocationError: naming the folder and the system's reason.
    """
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        with tempfile.TemporaryFile(dir=existing, prefix=".transfer-probe-"):
            pass
    except OSError as error:
        in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{in_the_way} is a file, not a folder" if in_the_way else error.strerror or error
        raise OutputLocationError(
            f"Cannot write to {folder}: {reason}. Choose a writable location for the output."
        ) from None


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


#: The locks of the outputs this process is writing: held until it exits (`lock_destination`).
_LOCKS: dict[str, "filelock.BaseFileLock"] = {}


def lock_destination(path: Path, worker: int | None = None) -> None:
    """Claims `path` for this process until it exits, or until `publish`: an exclusive lock on a file
    named after its real path in the temporary folder (nothing is added beside the output), so that
    two commands writing the same output on this machine (two `train --out runs/a` started
    together) cannot share one staging folder; the second stops with one line.

    Raises:
        OutputLocationError: another process holds the lock.
    """
    import filelock

    lock_file = _lock_file(path, worker)
    if str(lock_file) in _LOCKS:
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_file, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise OutputLocationError(
            f"Another transfer command is writing {path} right now. Wait for it to finish, or choose another --out."
        ) from None
    _LOCKS[str(lock_file)] = lock


def _release(path: Path, worker: int | None = None) -> None:
    """Drops the lock of a published output."""
    lock = _LOCKS.pop(str(_lock_file(path, worker)), None)
    if lock is not None:
        lock.release()


def _lock_file(path: Path, worker: int | None) -> Path:
    """The lock of `path`, in a folder of this user's (another user's folder there would refuse us)."""
    key = hashlib.sha256(f"{os.path.realpath(path)}:{worker}".encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"transfer-locks-{os.getuid()}" / f"{key}.lock"


def staging_dir(path: Path, kind: str, worker: int | None = None) -> Path:
    """An empty hidden folder beside `path`, holding only the `kind` marker, to write into before
    `publish` (see `partial_dir`); `path` is locked for this process first (`lock_destination`)."""
    lock_destination(path, worker)
    staging = partial_dir(path, worker)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write_text(staging / MARKER, marker_json(kind) + "\n")
    return staging


def publish(staging: Path, path: Path) -> None:
    """Moves a completed staging folder to `path`, replacing what `check_destination` allowed.

    An existing output is first renamed aside, so at every moment either it or the new one is
    complete under its name; the old one is deleted last.
    """
    path = Path(path)
    _list_written_files(staging)
    old = path.parent / f".{path.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if path.is_dir():
        path.rename(old)
    staging.rename(path)
    if old.exists():
        shutil.rmtree(old)
    _release(path)


def _list_written_files(staging: Path) -> None:
    """Records in the marker every file written under `staging`, except inside nested outputs
    (which list their own), so that `--force` can tell them from anything added later."""
    marker_file = Path(staging) / MARKER
    if not marker_file.is_file():
        return
    nested = [p.parent for p in Path(staging).rglob(MARKER) if p.parent != Path(staging)]
    files = sorted(
        str(p.relative_to(staging)) for p in Path(staging).rglob("*")
        if (p.is_file() or p.is_symlink()) and p != marker_file and not any(n in p.parents for n in nested)
    )
    marker = read_json(marker_file)
    write_text(marker_file, json.dumps({**marker, "files": files}) + "\n")


@contextmanager
def staged(path: Path, kind: str) -> Iterator[Path]:
    """A staging folder for the `kind` output at `path`, published when the block succeeds and
    removed when it fails, so a failed command leaves the earlier output as it was."""
    staging = staging_dir(path, kind)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, path)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to, renamed to `path` when the block succeeds, so a
    reader never sees half a file; removed when the block fails. The name ends as `path` does
    (writers such as Keras' `save_weights` insist on their suffix). Its folder is created if needed."""
    path = Path(path)
    temporary = path.with_name(f".tmp-{path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_table(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)


def read_table(path: Path) -> pd.DataFrame:
    """One of the CSV files written here with every value as written (class names such as `0`
    stay text)."""
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_labels(path: Path, class_names: list[str]) -> None:
    write_text(path, "".join(f"{name}\n" for name in class_names))


def read_labels(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: a run directory or export needs its {LABELS}.")
    return [line for line in path.read_text().splitlines() if line]


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _contents(path: Path) -> str:
    if path.is_file():
        return "a file"
    names = sorted(p.name for p in path.iterdir())
    return f"holding {', '.join(names[:3])}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")
