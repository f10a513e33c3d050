"""The layout of every folder `transfer` writes, and writing them safely.

| output | written by | files |
|---|---|---|
| run directory | `train` | `model.keras`, `labels.txt`, `config.json`, `metrics.json`, `history.csv`, `curves.png`, `split.csv`, `skipped.csv`, `duplicates.csv` (`checkpoint.keras` while training only) |
| export | `export` | by `--format`: `saved_model.pb` and `variables/` (TensorFlow's), `model.tflite` or `model.onnx`; and `labels.txt`, `config.json` (the run's, with an `export` section: format, quantization, the check's agreement) |
| evaluation | `evaluate` (default `MODEL/evaluation`) | `metrics.json`, `metrics.csv`, `confusion_matrix.csv` and `.png`, `errors.csv`, `skipped.csv` |
| report | `report` (default `RUN_DIR/report.html`) | one self-contained HTML file |
| visualization | `visualize` (default `RUN_DIR/visualize`) | `filters.png`, `feature_maps_<layer>.png` |
| comparison | `compare` | `split.csv`, `skipped.csv`, `runs/<backbone>/` (run directories), `config.json`, `leaderboard.csv` and `.png` |

**Ownership.** Every output folder's first file is a marker, `.transfer.json` (kind, version,
creation time); a report carries it as `<meta name="generator" content="transfer report ...">`.
`force` replaces only an earlier output of the same kind that carries the marker, and refuses
anything else, naming what is in the way. `check_destination` says so before any long work, and
also refuses an output inside the data folder and a location that cannot be written.

Folders are written into a hidden staging folder beside the destination (`.NAME.partial`) and
renamed into place when complete, so a half-written output is never mistaken for a finished one; an
existing output is renamed aside first and deleted last, and a failed command removes its staging
folder. Single files (JSON, CSV, HTML) go through a temporary name and a rename. While training, the run's staging folder
also holds what `transfer train --resume` needs: `resume.json`, the best weights so far and, per
stage, the epoch backups, the early-stopping record and the CSV history.

Everything else asks this module where a file goes and how to read it: `Run.open(path)`,
`Export.open(path)`, `open_model(path)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from transfer.errors import InvalidOptionError, ModelLoadError, OutputExistsError, OutputLocationError, op_error_message

# A run directory.
MODEL = "model.keras"
CHECKPOINT = "checkpoint.keras"
LABELS = "labels.txt"
CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
CURVES = "curves.png"
SPLIT = "split.csv"
SKIPPED = "skipped.csv"
DUPLICATES = "duplicates.csv"
# ... and, while it trains, in its staging folder.
RESUME_STATE = "resume.json"
BEST_WEIGHTS = "best_weights.npz"
STAGES = "stages"
#: `train --tensorboard`: Keras TensorBoard logs of every stage (`tensorboard --logdir RUN_DIR/logs`).
TENSORBOARD_LOGS = "logs"
# An export: one of these, by format.
SAVED_MODEL = "saved_model.pb"
LITERT_MODEL = "model.tflite"
ONNX_MODEL = "model.onnx"
EXPORT_FILES = {"savedmodel": SAVED_MODEL, "litert": LITERT_MODEL, "onnx": ONNX_MODEL}
# An evaluation.
EVALUATION = "evaluation"
METRICS_CSV = "metrics.csv"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
ERRORS_CSV = "errors.csv"
# A report and a visualization.
REPORT = "report.html"
VISUALIZATION = "visualize"
FILTERS_PNG = "filters.png"
# A comparison.
RUNS = "runs"
#: `transfer cross-validate`: the folds, one folder per fold, the results.
FOLDS_CSV = "folds.csv"
CV_CSV = "cv.csv"
CV_JSON = "cv.json"
CV_PNG = "cv.png"
#: `transfer lr-find`'s two files.
LR_FIND_CSV = "lr_find.csv"
LR_FIND_PNG = "lr_find.png"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_PNG = "leaderboard.png"

if TYPE_CHECKING:  # pandas is imported where tables are read: the command line starts without it
    import pandas as pd

HISTORY_COLUMNS = ["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
SKIPPED_COLUMNS = ["path", "label", "reason"]



@dataclass(frozen=True)
class Run:
    """A run directory written by `transfer train`, or the staging folder of one in progress."""

    path: Path

    @classmethod
    def open(cls, path: Path) -> Run:
        """The run at `path`; an interrupted run's staging folder opens on its best checkpoint.

        Raises:
            ModelLoadError: `path` holds neither `model.keras` nor `checkpoint.keras`.
        """
        run = cls(Path(path))
        _require_exists(run.path, "a run directory written by `transfer train`")
        if not run.model_file.is_file():
            raise ModelLoadError(f"{path} is not a run directory: {run.path / MODEL} is missing.")
        return run

    @property
    def model_file(self) -> Path:
        finished = self.path / MODEL
        return finished if finished.is_file() or not (self.path / CHECKPOINT).is_file() else self.path / CHECKPOINT

    def load_model(self):
        """The trained classifier, for inference (the optimizer is not restored)."""
        return load_keras_model(self.model_file)

    def labels(self) -> list[str]:
        return read_labels(self.path / LABELS)

    def layer_names(self, inner: str) -> list[str]:
        """The names of the layers inside the nested model `inner` (the backbone), nested ones
        included, read from `model.keras`'s description without loading the model; `[]` where it
        cannot be read."""
        try:
            with zipfile.ZipFile(self.model_file) as archive:
                config = json.loads(archive.read("config.json"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return []

        def layers(entry) -> list[dict]:
            return [layer for layer in (entry.get("config") or {}).get("layers") or [] if layer.get("class_name") != "InputLayer"]

        def names(entry) -> list[str]:
            return [name for layer in layers(entry) for name in [layer.get("name") or layer["config"].get("name"), *names(layer)]]

        found = [layer for layer in layers(config) if (layer.get("name") or layer["config"].get("name")) == inner]
        return [name for name in names(found[0]) if name] if found else []

    def config(self) -> dict:
        """The run's `config.json` (every option, resolved), or `{}` where it is missing."""
        return read_json(self.path / CONFIG) if (self.path / CONFIG).is_file() else {}

    def split(self) -> pd.DataFrame:
        """`path`, `label`, `split` of every image the run used.

        Raises:
            ModelLoadError: the run has no `split.csv`.
        """
        if not (self.path / SPLIT).is_file():
            raise ModelLoadError(f"{self.path} lacks {SPLIT}; this needs a run directory written by `transfer train`.")
        return read_table(self.path / SPLIT)

    def validation_images(self) -> pd.DataFrame:
        split = self.split()
        return split[split["split"] == "val"][["path", "label"]]

    def skipped(self) -> pd.DataFrame:
        return _table_or_empty(self.path / SKIPPED, SKIPPED_COLUMNS)

    def duplicates(self) -> pd.DataFrame:
        from transfer.data import DUPLICATE_COLUMNS

        table = _table_or_empty(self.path / DUPLICATES, DUPLICATE_COLUMNS)
        return table.assign(removed=table["removed"] == "True")

    # What `train` writes, into the staging folder.

    def write_data(self, folder) -> None:
        """The class names, split, skipped files and duplicates of an `ImageFolder`."""
        write_labels(self.path / LABELS, folder.class_names)
        write_table(self.path / SPLIT, folder.examples)
        write_table(self.path / SKIPPED, folder.skipped)
        write_table(self.path / DUPLICATES, folder.duplicates)

    def write_results(self, model, *, metrics: dict, config: dict, history: pd.DataFrame) -> None:
        """The model, its metrics, its options and its per-epoch history with `curves.png`."""
        from transfer.plots import plot_curves

        model.save(self.path / MODEL)
        write_json(self.path / METRICS, metrics)
        write_table(self.path / HISTORY, history)
        plot_curves(history, self.path / CURVES)
        write_json(self.path / CONFIG, config)

    # What `train --resume` needs, in the staging folder while training.

    @property
    def resume_file(self) -> Path:
        return self.path / RESUME_STATE

    @property
    def best_weights_file(self) -> Path:
        return self.path / BEST_WEIGHTS

    def stage_dir(self, stage: str) -> Path:
        """A stage's epoch backups (`backup/`), early-stopping record and CSV history."""
        return self.path / STAGES / stage

    def stage_history(self, stage: str) -> pd.DataFrame:
        """One row per epoch of `stage` from its `keras.callbacks.CSVLogger` file (1-based epochs).

        An epoch logged twice (run again after a restart) keeps its last row.
        """
        import pandas as pd

        log = self.stage_dir(stage) / HISTORY
        if not log.is_file():
            return pd.DataFrame(columns=HISTORY_COLUMNS)
        frame = pd.read_csv(log).drop_duplicates("epoch", keep="last").sort_values("epoch")
        frame["epoch"] = frame["epoch"] + 1
        frame.insert(0, "stage", stage)
        return frame.reindex(columns=HISTORY_COLUMNS).reset_index(drop=True)

    def drop_resume_state(self) -> None:
        """Deletes what only training and resuming needed, before the run is published: the best
        checkpoint too, which `model.keras` now holds (a ResNet50 run was 190 MB with both)."""
        for path in (self.path / STAGES, self.best_weights_file, self.resume_file, self.path / CHECKPOINT):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Export:
    """An export of `transfer export`: a SavedModel folder, or a folder holding `model.tflite` or
    `model.onnx`; each with `labels.txt` and `config.json` beside the model."""

    path: Path
    format: str = "savedmodel"
    file: Path | None = None  # the .tflite or .onnx file; None for a SavedModel, which is its folder

    @classmethod
    def open(cls, path: Path) -> Export:
        """An export folder, or a `.tflite` or `.onnx` file with `labels.txt` beside it.

        Raises:
            ModelLoadError: `path` is none of these.
        """
        path = Path(path)
        formats = {Path(name).suffix: format for format, name in EXPORT_FILES.items() if format != "savedmodel"}
        if path.is_file() and path.suffix in formats:
            return cls(path.parent, formats[path.suffix], path)
        for format, name in EXPORT_FILES.items():
            if (path / name).is_file():
                return cls(path, format, None if format == "savedmodel" else path / name)
        raise ModelLoadError(
            f"{path} is not an export: it holds none of {', '.join(EXPORT_FILES.values())}. "
            f"Pass the --out folder of `transfer export`, or its .tflite or .onnx file."
        )

    @property
    def model_file(self) -> Path:
        return self.file if self.file is not None else self.path

    def labels(self) -> list[str]:
        """`labels.txt` beside the model; for an ONNX file without it, the labels in its metadata.

        Raises:
            ModelLoadError: neither is there.
        """
        if (self.path / LABELS).is_file() or self.format == "savedmodel":
            return read_labels(self.path / LABELS)
        if self.format == "onnx":
            from transfer import extras

            extras.require("onnx")
            import onnx

            metadata = {entry.key: entry.value for entry in onnx.load(str(self.model_file), load_external_data=False).metadata_props}
            if "labels" in metadata:
                return json.loads(metadata["labels"])
        raise ModelLoadError(
            f"{self.path / LABELS} is missing: {self.model_file.name} needs the {LABELS} of its export beside it "
            f"(the class names in output order)."
        )

    def config(self) -> dict:
        return read_json(self.path / CONFIG) if (self.path / CONFIG).is_file() else {}

    def load_signature(self):
        """The `serving_default` signature (TensorFlow alone, no `transfer` code)."""
        import tensorflow as tf

        try:
            return tf.saved_model.load(str(self.path)).signatures["serving_default"]
        except Exception as error:  # protobuf, OpError, OSError, KeyError: all mean the same here
            raise ModelLoadError(
                f"Cannot load the SavedModel at {self.path} ({op_error_message(error)[:300]}). It is damaged or not "
                f"written by `transfer export`; export the run again."
            ) from error

    def write_metadata(self, labels: list[str], config: dict) -> None:
        """`labels.txt`, and the model's `config.json` (its options, for evaluation with TTA)."""
        write_labels(self.path / LABELS, labels)
        write_json(self.path / CONFIG, config)


def _require_exists(path: Path, expected: str) -> None:
    """A mistyped model path is missing input (exit 2), not a model that failed to load."""
    if not Path(path).exists():
        raise InvalidOptionError(f"{path} does not exist; expected {expected}. Check the path.")


def open_model(path: Path) -> Run | Export:
    """A run directory (has `model.keras`) or an export (`Export.open`).

    Raises:
        ModelLoadError: `path` is neither.
    """
    path = Path(path)
    _require_exists(path, "a run directory (the --out of `transfer train`) or an export (of `transfer export`)")
    if (path / MODEL).is_file() or (path / CHECKPOINT).is_file():
        return Run(path)
    try:
        return Export.open(path)
    except ModelLoadError:
        raise ModelLoadError(
            f"{path} is neither a run directory (with {MODEL}) nor an export (with {', '.join(EXPORT_FILES.values())}). "
            f"Pass the --out folder of `transfer train` or `transfer export`, or an exported .tflite or .onnx file."
        ) from None


def load_keras_model(model_file: Path):
    """A `model.keras` written by `transfer train`, for inference, with a clear error if damaged."""
    import keras

    import transfer.preprocessing  # noqa: F401  (registers the in-model Preprocess layer)

    model_file = Path(model_file)
    try:
        return keras.saving.load_model(model_file, compile=False)
    except Exception as error:
        reason = op_error_message(error)[:300] if zipfile.is_zipfile(model_file) else "not a complete .keras zip archive"
        raise ModelLoadError(
            f"Cannot load the model file {model_file} ({reason}). It is damaged or not "
            f"written by `transfer train`; train the run again."
        ) from error


def write_evaluation(evaluation, out_dir: Path) -> None:
    """An `Evaluation` as metrics.json/.csv, confusion_matrix.csv/.png, errors.csv and skipped.csv."""
    from transfer.plots import plot_confusion_matrix

    with staged(out_dir, "evaluation") as staging:
        write_json(staging / METRICS, {**evaluation.summary, "per_class": evaluation.per_class.to_dict(orient="index")})
        evaluation.per_class.to_csv(staging / METRICS_CSV)
        evaluation.confusion.to_csv(staging / CONFUSION_CSV)
        plot_confusion_matrix(evaluation.confusion, staging / CONFUSION_PNG)
        errors = evaluation.errors.drop(columns="correct").rename(columns={"label": "true_label", "top": "top_3"})
        write_table(staging / ERRORS_CSV, errors)
        write_table(staging / SKIPPED, evaluation.skipped)


def default_evaluation_dir(model: Path) -> Path:
    """`RUN/evaluation` for a run; `NAME-evaluation` beside an export folder (of a file: its folder),
    which holds only what its runtime reads."""
    opened = open_model(model)
    return opened.path / EVALUATION if isinstance(opened, Run) else opened.path.parent / f"{opened.path.name}-{EVALUATION}"


def feature_maps_png(layer: str) -> str:
    return f"feature_maps_{layer}.png"


@dataclass(frozen=True)
class Comparison:
    """A folder written by `transfer compare`: one split, one run per backbone, a leaderboard."""

    path: Path

    @property
    def split_file(self) -> Path:
        return self.path / SPLIT

    def run_dir(self, backbone: str) -> Path:
        from transfer.backbones import backbone_folder

        return self.path / RUNS / backbone_folder(backbone)

    def write_data(self, folder) -> None:
        write_table(self.split_file, folder.examples)
        write_table(self.path / SKIPPED, folder.skipped)

    def relocate_runs(self, final: Path) -> None:
        """Points each run's recorded manifest at the comparison's split where it will be published."""
        for config_file in (self.path / RUNS).glob(f"*/{CONFIG}"):
            config = read_json(config_file)
            config["manifest"] = str(Path(final) / SPLIT)
            write_json(config_file, config)

    def write_leaderboard(self, leaderboard: pd.DataFrame, config: dict) -> None:
        """The leaderboard as PNG and CSV, and the comparison's options; the CSV last, as it marks
        a finished comparison."""
        from transfer.plots import plot_leaderboard

        plot_leaderboard(leaderboard, self.path / LEADERBOARD_PNG)
        write_json(self.path / CONFIG, config)
        write_table(self.path / LEADERBOARD_CSV, leaderboard)


@dataclass(frozen=True)
class CrossValidation:
    """A folder written by `transfer cross-validate`: the fold of each image (`folds.csv`), per
    fold `fold-K/train.csv` (the images the fold's runs train on) and one run per backbone
    `fold-K/NAME` with the held-out fold's evaluation in it, and the results (`cv.csv` one row per
    backbone and fold, `cv.json` means and standard deviations, `cv.png`)."""

    path: Path

    @property
    def folds_file(self) -> Path:
        return self.path / FOLDS_CSV

    def fold_dir(self, fold: int) -> Path:
        return self.path / f"fold-{fold}"

    def manifest(self, fold: int) -> Path:
        return self.fold_dir(fold) / "train.csv"

    def run_dir(self, fold: int, backbone: str) -> Path:
        from transfer.backbones import backbone_folder

        return self.fold_dir(fold) / backbone_folder(backbone)

    def relocate_runs(self, final: Path) -> None:
        """Points each run's recorded manifest (its `manifest` and `data`) at its fold's where it will
        be published."""
        for config_file in self.path.glob(f"fold-*/*/{CONFIG}"):
            config = read_json(config_file)
            config["manifest"] = config["data"] = str(Path(final).resolve() / config_file.parent.parent.name / "train.csv")
            write_json(config_file, config)

    def write_results(self, table: pd.DataFrame, summary: dict) -> None:
        """`cv.png`, `cv.json`, then `cv.csv` (last: it marks a finished cross-validation)."""
        from transfer.plots import plot_cross_validation

        plot_cross_validation(table, self.path / CV_PNG)
        write_json(self.path / CV_JSON, summary)
        write_table(self.path / CV_CSV, table)


# Who owns an output, and replacing it safely.

#: Every output folder's first file: which kind of output it is, the tool's version and when.
MARKER = ".transfer.json"
#: The single-file outputs: a report (HTML) and features (Parquet, the marker in its schema metadata).
SINGLE_FILES = ("report", "features")
REPORT_GENERATOR = "transfer report"
PARQUET_MARKER = b"transfer"


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
    from transfer import __version__

    return json.dumps({
        "tool": "transfer", "kind": kind, "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


#: The file name written inside a folder given as `--out` for a one-file output.
FEATURES_FILE = "features.parquet"


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
            raise OutputExistsError(f"{path} already exists ({what}). Choose another name, or pass --force to replace it.")
        foreign = [] if single_file else foreign_files(path)
        if foreign:
            shown = ", ".join(str(p.relative_to(path)) for p in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputExistsError(
                f"{path} is an earlier transfer {kind}, but it also holds what transfer did not write ({shown}); "
                f"--force would delete it, so nothing is replaced. Move those out first, or choose another name."
            )
    check_writable(path.parent)


#: The outputs of `transfer` that may sit inside another: a run's evaluation and visualization
#: (their default places), a comparison's runs.
NESTED_KINDS = {"run": ("evaluation", "visualization"), "comparison": ("run",), "cross-validation": ("run",)}


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


def data_folders(run: Path) -> list[str]:
    """The folders a run's images came from (`config.json`), where none of its outputs may go."""
    return list(Run(Path(run)).config().get("data_folders", []))


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
    """Creates `folder` if needed and a file in it, to know now that the output can be written.

    Raises:
        OutputLocationError: naming the folder and the system's reason.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".transfer-probe-"):
            pass
    except OSError as error:
        in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{in_the_way} is a file, not a folder" if in_the_way else error.strerror or error
        raise OutputLocationError(
            f"Cannot write to {folder}: {reason}. Choose a writable location for the output."
        ) from None


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


#: Open lock files of the outputs this process is writing: held until it exits (`lock_destination`).
_LOCKS: dict[str, int] = {}


def lock_destination(path: Path, worker: int | None = None) -> None:
    """Claims `path` for this process until it exits, or until `publish`: an exclusive lock on a file
    named after its real path in the temporary folder (nothing is added beside the output), so that
    two commands writing the same output on this machine (two `train --out runs/a` started
    together) cannot share one staging folder; the second stops with one line.

    Raises:
        OutputLocationError: another process holds the lock.
    """
    import fcntl

    lock = _lock_file(path, worker)
    if str(lock) in _LOCKS:
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise OutputLocationError(
            f"Another transfer command is writing {path} right now. Wait for it to finish, or choose another --out."
        ) from None
    _LOCKS[str(lock)] = descriptor


def _release(path: Path, worker: int | None = None) -> None:
    """Drops the lock of a published output."""
    descriptor = _LOCKS.pop(str(_lock_file(path, worker)), None)
    if descriptor is not None:
        os.close(descriptor)


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
    (writers such as Keras' `save_weights` insist on their suffix)."""
    path = Path(path)
    temporary = path.with_name(f".tmp-{path.name}")
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


def _table_or_empty(path: Path, columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return read_table(path) if path.is_file() else pd.DataFrame(columns=columns)
