"""Where a dataset's images come from: a folder of class subfolders, or a CSV manifest.

Both give a `Listing`: the sorted class names, the image files with their labels (and split, where
the source fixes it) and the files that will not be used, with the reason. Nothing is decoded
here; `transfer.data.folders.prepare` checks the images, splits and deduplicates.

Folder layout (as `keras.utils.image_dataset_from_directory`): `DATA_DIR/<class>/<image>`; a `.zip`,
`.tar`, `.tar.gz` or `.tgz` of it is read as the folder (`transfer.data.archives.resolve_data`). Class
names are the subfolder names in sorted order; a class's index in that order is its output index in
every model. Folders nested inside a class folder are recursed into (symbolic links to folders
too, each real folder once), and their images belong to that class; `transfer predict` recurses
the same way. A link in a class folder that leads elsewhere into the data folders (to another
class, or back to the data folder) is not followed, and a file linked twice is read once: each is
listed as skipped with its reason, so no image counts under a class it is not in, or twice. Links
out of the data folders are followed. Hidden files and files without an image extension are skipped and reported.

Manifest: a CSV file with columns `path,label` and optionally `split` (`train` or `val`). Relative
paths are relative to the manifest's folder. A `labels` column instead of `label` makes it a
multi-label manifest: each image carries zero or more labels separated by `;` (none: a negative
example for every label); its `label` in the listing is the sorted set joined by `;`
(`split_labels` reads it back), and the class names are every label used, sorted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from transfer.data.archives import resolve_data
from transfer.metrics.multilabel import LABEL_SEPARATOR, split_labels
from transfer.core.errors import DataError
from transfer.outputs.layout import MARKER

if TYPE_CHECKING:  # pandas is imported where a listing is made: `predict`'s option checks come first
    import pandas as pd

SPLITS = ("train", "val")
#: What separates the labels of one image in a multi-label manifest's `labels` column.
#: Folder names that name a split, not a class: `DATA/` holding `train/` and `val/` given as the data
#: folder is almost always a mistake (a two-class "train" vs "val" classifier), refused unless insisted on.
SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing", "eval")
#: The one rule for which files are images, in every command, by extension, compared case-insensitively:
#: the formats TensorFlow decodes in the graph (so the exported model reads them too), and HEIC and AVIF
#: photos, which Pillow makes PNG on the Python side (`transfer.data.preprocessing.decode_any`).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".heic", ".heif", ".avif")
#: Image formats that are reported, not read.
UNSUPPORTED_IMAGES = (".tif", ".tiff", ".jxl", ".jp2")


@dataclass
class Listing:
    """The files of a dataset before any image is decoded.

    Attributes:
        class_names: sorted class names; index = model output index.
        files: one row per candidate image: `path` (absolute), `label`, `split` (`train`, `val`,
            or empty where the source does not fix it).
        skipped: one row per file that will not be used: `path`, `label`, `reason`.
        source: where the listing came from, for messages and `config.json`.
        folders: the data folders (for a manifest, the folder above each image's folder), where
            no output may go: the next run on them would read it.
        multi_label: a multi-label manifest: each `label` is a set of labels joined by `;`.
    """

    class_names: list[str]
    files: pd.DataFrame
    skipped: pd.DataFrame
    source: str
    folders: list[str] = field(default_factory=list)
    multi_label: bool = False


def list_classes(data_dir: Path, allow_split_names: bool = False) -> list[str]:
    """Sorted names of the class subfolders of `data_dir`.

    Args:
        allow_split_names: accept class folders that are all named like splits (`SPLIT_NAMES`).

    Raises:
        DataError: the folder is missing, has fewer than two class subfolders, holds images
            directly instead of in class subfolders, or (unless allowed) holds split folders.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "is a file, not a folder nor an archive (.zip, .tar, .tar.gz, .tgz)" if data_dir.is_file() else "does not exist or is not a folder"
        raise DataError(
            f"Data folder {data_dir} {what}. Expected a folder with one subfolder of images per class, e.g. "
            f"{data_dir}/cats/*.jpg and {data_dir}/dogs/*.jpg, or a .zip or .tar(.gz) of one."
        )
    loose = sorted(p.name for p in data_dir.iterdir() if p.is_file() and has_image_suffix(p))
    if loose:
        raise DataError(
            f"{data_dir} holds images directly ({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}); "
            f"expected one subfolder per class. Move each image into a folder named after its class."
        )
    names = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise DataError(
            f"{data_dir} has {len(names)} class subfolder(s) ({', '.join(names) or 'none'}); a "
            f"classifier needs at least 2, one subfolder of images per class."
        )
    if not allow_split_names and all(name.lower() in SPLIT_NAMES for name in names):
        train = next((n for n in names if n.lower() in ("train", "training")), names[0])
        val = next((n for n in names if n.lower() in ("val", "valid", "validation")), None)
        right = f"{Path(data_dir) / train}" + (f" --val-dir {Path(data_dir) / val}" if val else "")
        raise DataError(
            f"{data_dir} holds folders named like splits ({', '.join(names)}), not classes; each split folder should "
            f"hold one subfolder per class. Give the split folders instead: {right}. If these folders really are "
            f"your classes, add --allow-split-names."
        )
    return names


def list_folder(data_dir: Path, val_dir: Path | None = None, allow_split_names: bool = False) -> Listing:
    """Lists `data_dir` (and a pre-split `val_dir` with the same classes); `allow_split_names` as
    in `list_classes`.

    Raises:
        DataError: a structure error (see `list_classes`), a class folder without any image file,
            or a `val_dir` whose classes differ.
    """
    given = (data_dir, val_dir)
    data_dir, val_dir = resolve_data(data_dir), resolve_data(val_dir)
    class_names = list_classes(data_dir, allow_split_names)
    folders = [(Path(data_dir), "train" if val_dir else "")]
    if val_dir is not None:
        if not Path(val_dir).is_dir():
            raise DataError(f"--val-dir {val_dir} does not exist or is not a folder. Expected the validation folder, with "
                            f"the same class subfolders as {data_dir}.")
        val_classes = list_classes(val_dir, allow_split_names)
        if val_classes != class_names:
            raise DataError(
                f"The validation folder {val_dir} has classes {val_classes}, but the training folder "
                f"{data_dir} has {class_names}. Both need the same class subfolders."
            )
        folders.append((Path(val_dir), "val"))
    files, skipped = [], []
    roots = tuple(os.path.realpath(folder) for folder, _ in folders)
    for folder, split in folders:
        for name in class_names:
            images, others = walk_images(folder / name, roots)
            images = [os.path.abspath(path) for path in images]
            others = [(os.path.abspath(path), reason) for path, reason in others]
            if not images:
                raise DataError(
                    f"Class folder {folder / name} has no image files ({len(others)} other file(s)); "
                    f"every class needs images with one of the extensions {', '.join(IMAGE_EXTENSIONS)}. "
                    f"Add images or remove the folder."
                )
            files += [(path, name, split) for path in images]
            skipped += [(path, name, reason) for path, reason in others]
    import pandas as pd

    source, validation = (_described(Path(g), Path(f)) if f is not None else None for g, f in zip(given, (data_dir, val_dir)))
    source += f" (validation: {validation})" if validation else ""
    return Listing(
        class_names,
        pd.DataFrame(files, columns=["path", "label", "split"]),
        pd.DataFrame(skipped, columns=["path", "label", "reason"]),
        source,
        [str(Path(folder).resolve()) for folder in (data_dir, val_dir) if folder is not None],
    )


def _described(given: Path, folder: Path) -> str:
    """A data folder as messages and `config.json` name it: an archive by its path and where it was unpacked."""
    return str(folder.resolve()) if given.resolve() == folder.resolve() else f"{given.resolve()} (unpacked in {folder})"


def read_manifest(manifest: Path) -> Listing:
    """Reads a `path,label[,split]` CSV manifest with pandas.

    Raises:
        DataError: the file is missing or not a CSV, lacks a column, has empty or unknown values,
            names files that do not exist, or has fewer than two classes.
    """
    import pandas as pd

    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"Manifest {manifest} does not exist; expected a CSV file with columns path,label[,split].")
    import warnings

    try:
        with warnings.catch_warnings():  # a line longer than the header is refused, not read with a shifted index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(manifest, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        more = "Expected" in str(error) or "Length of header" in str(error)
        hint = (f" A line has more fields than the header: if an image has several labels, put them in one labels column "
                f"separated by {LABEL_SEPARATOR}, not by commas." if more else "")
        raise DataError(f"Manifest {manifest} is not a readable CSV file: {str(error).rstrip('.')}.{hint}") from None
    table.columns = [str(column).strip() for column in table.columns]
    if {"label", "labels"} <= set(table.columns):
        raise DataError(
            f"Manifest {manifest} has both a label and a labels column; give one: label (one class per image) or labels "
            f"(zero or more labels per image, separated by {LABEL_SEPARATOR})."
        )
    multi_label = "labels" in table.columns
    table = table.rename(columns={"labels": "label"})
    missing = [column for column in ("path", "label") if column not in table.columns]
    if missing:
        raise DataError(
            f"Manifest {manifest} has columns {list(table.columns)} but lacks {', '.join(missing)}; "
            f"expected a header line with path,label (or path,labels) and optionally split."
        )
    has_split = "split" in table.columns
    table = table[["path", "label"] + (["split"] if has_split else [])].apply(lambda column: column.str.strip())
    rows = table.index + 2  # line numbers in the file, after the header
    empty_label = (table["label"] == "") & (not multi_label)  # no label: a multi-label negative example
    _refuse_rows(manifest, rows[(table["path"] == "") | empty_label], "an empty path or label",
                 "" if multi_label else " For images with no label (multi-label data), name the column labels.")
    if not multi_label:
        _refuse_rows(manifest, rows[table["label"].str.contains(LABEL_SEPARATOR, regex=False)],
                     f"a label with {LABEL_SEPARATOR} in it",
                     " For several labels per image, name the column labels (a multi-label manifest).")
    if multi_label:
        table["label"] = _label_sets(manifest, table["label"], rows)
    if has_split:
        _refuse_rows(manifest, rows[~table["split"].isin(SPLITS)], f"a split other than {' or '.join(SPLITS)}")
    if table.empty:
        raise DataError(f"Manifest {manifest} lists no images; expected one row per image: path,label[,split].")

    base = manifest.resolve().parent
    paths = [os.path.abspath(base / path) for path in table["path"]]
    absent = [(row, path) for row, path in zip(rows, paths) if not os.path.isfile(path)]
    if absent:
        shown = "; ".join(f"line {row}: {path}" for row, path in absent[:5])
        raise DataError(
            f"{len(absent)} file(s) listed in manifest {manifest} do not exist ({shown}"
            f"{'; ...' if len(absent) > 5 else ''}). Relative paths are read from {base}."
        )
    if multi_label:
        _refuse_listed_twice(manifest, paths, table["label"].tolist(), rows)
        class_names = sorted({label for joined in table["label"] for label in split_labels(joined)})
        if not class_names:
            raise DataError(f"Manifest {manifest} has a labels column, but no image carries a label; expected labels separated by {LABEL_SEPARATOR}.")
    else:
        class_names = sorted(table["label"].unique())
        if len(class_names) < 2:
            raise DataError(f"Manifest {manifest} has {len(class_names)} label(s) ({', '.join(class_names)}); a classifier needs at least 2.")
    files = pd.DataFrame({"path": paths, "label": table["label"].tolist(), "split": table["split"].tolist() if has_split else ""})
    folders = sorted({os.path.dirname(os.path.dirname(path)) for path in paths})
    return Listing(class_names, files, pd.DataFrame(columns=["path", "label", "reason"]), str(manifest.resolve()), folders,
                   multi_label=multi_label)


def _label_sets(manifest: Path, cells: pd.Series, rows: pd.Index) -> list[str]:
    """Each `labels` cell as its sorted labels joined by `;`; refuses empty names, names that are file
    paths, and a label given twice in one row."""
    sets, problems = [], []
    for row, cell in zip(rows, cells):
        labels = [label.strip() for label in cell.split(LABEL_SEPARATOR)] if cell else []
        if any(label == "" for label in labels):
            problems.append((row, f"an empty label name in {cell!r} (two {LABEL_SEPARATOR} in a row, or one at an end)"))
        elif any("/" in label or "\\" in label or has_image_suffix(Path(label)) for label in labels):
            path = next(label for label in labels if "/" in label or "\\" in label or has_image_suffix(Path(label)))
            problems.append((row, f"a label that is a file path, {path!r} (is a comma missing between path and labels?)"))
        elif len(set(labels)) < len(labels):
            twice = sorted({label for label in labels if labels.count(label) > 1})
            problems.append((row, f"the label {twice[0]!r} twice in {cell!r}"))
        sets.append(LABEL_SEPARATOR.join(sorted(labels)))
    if problems:
        shown = "; ".join(f"line {row}: {problem}" for row, problem in problems[:5])
        raise DataError(f"Manifest {manifest} has {len(problems)} bad labels cell(s): {shown}"
                        f"{'; ...' if len(problems) > 5 else ''}. Separate labels with {LABEL_SEPARATOR}, each a name.")
    return sets


def _refuse_listed_twice(manifest: Path, paths: list[str], label_sets: list[str], rows: pd.Index) -> None:
    """An image is listed once in a multi-label manifest: twice is either a conflict or a copy to drop."""
    first: dict[str, tuple[int, str]] = {}
    for row, path, labels in zip(rows, paths, label_sets):
        if path in first:
            line, earlier = first[path]
            conflict = f"with labels {earlier!r} and {labels!r}" if earlier != labels else "with the same labels"
            raise DataError(f"Manifest {manifest} lists {path} twice (lines {line} and {row}), {conflict}. List each image "
                            f"once, with all its labels separated by {LABEL_SEPARATOR}.")
        first[path] = (row, labels)


def special_file_kind(path: str | Path) -> str | None:
    """What a path that is neither a regular file nor a folder is ("a named pipe", "a socket", "a
    device file"), or `None`: only regular files are read (a named pipe would block a read forever)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def has_image_suffix(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def not_an_image_reason(path: Path) -> str:
    """Why a file without an image extension is left out (see `IMAGE_EXTENSIONS`)."""
    suffix = Path(path).suffix.lower()
    if suffix in UNSUPPORTED_IMAGES:
        return (
            f"{suffix[1:].upper()} images are not read (neither TensorFlow nor the exported model decodes them); "
            f"convert to PNG or JPEG"
        )
    return f"not an image file (extension {Path(path).suffix or 'none'!r}; images are {', '.join(IMAGE_EXTENSIONS)})"


def walk_images(folder: Path, data_roots: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """`(images, [(path, reason), ...])` below `folder`, sorted, following folder links once.

    Paths start with `folder` as given. Hidden files and folders, broken links and files without an
    image extension are the second list, with the reason; the ownership marker of a folder that
    `transfer` wrote is neither. With `data_roots` (the real paths of the data folders; `folder` is
    one class folder of them), a link into the data folders but out of `folder` (to another class,
    to the data folder itself) is not followed, and a file reached twice (two links to it) is read
    once: the second list says so. A link out of the data folders is followed.
    """
    images, others, seen, files_seen = [], [], set(), set()
    own = os.path.realpath(folder)
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back to a folder already listed
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        elsewhere = {d: _elsewhere_in_data(os.path.join(root, d), own, data_roots) for d in dirs}
        others += [(os.path.join(root, d), reason) for d, reason in elsewhere.items() if reason]
        hidden_dirs = [d for d in dirs if d.startswith(".") and not elsewhere[d]]
        dirs[:] = [d for d in dirs if not d.startswith(".") and not elsewhere[d]]
        for name in dirs:  # searched like any folder; said where it holds nothing to read
            if has_image_suffix(Path(name)) and not any(files for _, _, files in os.walk(os.path.join(root, name))):
                others.append((os.path.join(root, name), "an empty folder named like an image"))
        for name in sorted(names) + hidden_dirs:
            path = os.path.join(root, name)
            if name == MARKER:
                continue
            if name.startswith("."):
                others.append((path, "hidden file" if name not in hidden_dirs else "hidden folder (not searched)"))
            elif not os.path.exists(path):
                others.append((path, f"broken symbolic link (target {os.readlink(path)} does not exist)"))
            elif special_file_kind(path):
                others.append((path, f"{special_file_kind(path)}, not a regular file (only files are read)"))
            elif not has_image_suffix(Path(name)):
                others.append((path, not_an_image_reason(Path(name))))
            elif data_roots and _elsewhere_in_data(path, own, data_roots):
                others.append((path, _elsewhere_in_data(path, own, data_roots)))
            elif data_roots and os.path.realpath(path) in files_seen:
                others.append((path, f"the same file as another of this class ({os.path.realpath(path)}), read once"))
            else:
                images.append(path)
                files_seen.add(os.path.realpath(path))
    return sorted(images), sorted(others)


def _elsewhere_in_data(path: str, own: str, data_roots: tuple[str, ...]) -> str | None:
    """Why `path`, below the class folder whose real path is `own`, is not read: its real location is
    in the data folders but outside that class folder (a link to another class, or to the data
    folder): its images would count under a class they are not in, and be read twice."""
    real = os.path.realpath(path)
    if not data_roots or real == own or real.startswith(own + os.sep):
        return None
    if not any(real == root or real.startswith(root + os.sep) for root in data_roots):
        return None
    return f"a link to {real}, inside the data folder but outside this class's folder (not followed: its images are in their own class)"


def _refuse_rows(manifest: Path, rows: pd.Index, problem: str, hint: str = "") -> None:
    if len(rows):
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise DataError(f"Manifest {manifest} has {problem} on {len(rows)} line(s): {shown}.{hint}")
