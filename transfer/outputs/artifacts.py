"""The folders `transfer` writes, as objects: a run, an export, a comparison, a cross-validation.

Everything else asks this module where a file of an output goes and how to read it: `Run.open(path)`,
`Export.open(path)`, `open_model(path)`. While training, the run's staging folder also holds what
`transfer train --resume` needs: `resume.json`, the best weights so far and, per stage, the epoch
backups, the early-stopping record and the CSV history. Pictures are drawn by the commands that
want them (`transfer.outputs.figures`), not here.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from transfer.core.errors import InvalidOptionError, ModelLoadError, NotAModelError, op_error_message
from transfer.outputs.layout import (
    BEST_WEIGHTS, CHECKPOINT, CONFIG, CONFUSION_CSV, CV_CSV, CV_JSON, DUPLICATE_COLUMNS, DUPLICATES, ERRORS_CSV,
    EVALUATION, EXPORT_FILES, FOLDS_CSV, HISTORY, HISTORY_COLUMNS, LABELS, LEADERBOARD_CSV, METRICS, METRICS_CSV,
    MODEL, NOVELTY, RESUME_STATE, RUNS, SKIPPED, SKIPPED_COLUMNS, SPLIT, STAGES,
)
from transfer.outputs.publishing import read_json, read_labels, read_table, staged, write_json, write_labels, write_table

if TYPE_CHECKING:  # pandas is imported where tables are read: the command line starts without it
    import pandas as pd


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
            raise NotAModelError(f"{path} is not a run directory: {run.path / MODEL} is missing.{_folder_hint(run.path)}")
        return run

    @property
    def model_file(self) -> Path:
        finished = self.path / MODEL
        return finished if finished.is_file() or not (self.path / CHECKPOINT).is_file() else self.path / CHECKPOINT

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
        return read_table(self.path / SPLIT).rename(columns={"labels": "label"})  # a multi-label run's: its label sets

    def validation_images(self) -> pd.DataFrame:
        split = self.split()
        return split[split["split"] == "val"][["path", "label"]]

    def skipped(self) -> pd.DataFrame:
        return _table_or_empty(self.path / SKIPPED, SKIPPED_COLUMNS)

    def duplicates(self) -> pd.DataFrame:
        table = _table_or_empty(self.path / DUPLICATES, DUPLICATE_COLUMNS)
        return table.assign(removed=table["removed"] == "True")

    # What `train` writes, into the staging folder.

    def write_data(self, folder) -> None:
        """The class names, split, skipped files and duplicates of an `ImageFolder`."""
        write_labels(self.path / LABELS, folder.class_names)
        write_table(self.path / SPLIT, as_manifest(folder.examples, folder.multi_label))
        write_table(self.path / SKIPPED, folder.skipped)
        write_table(self.path / DUPLICATES, folder.duplicates)

    def detector(self):
        """The run's open-set detector (`transfer.metrics.novelty.NoveltyDetector`), or `None` where it
        recorded none (`--unknown off`, too few images, or a run from before detectors).

        Raises:
            ModelLoadError: `novelty.npz` is there but cannot be read.
        """
        from transfer.metrics.novelty import NoveltyDetector

        if not (self.path / NOVELTY).is_file():
            return None
        try:
            return NoveltyDetector.load(self.path / NOVELTY)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ModelLoadError(f"Cannot read {self.path / NOVELTY} ({str(error)[:200]}); train the run again.") from None

    def write_results(self, model, *, metrics: dict, config: dict, history: pd.DataFrame, detector=None) -> None:
        """The model, its metrics, its options, its per-epoch history and its open-set `detector`, if
        any (the caller draws `curves.png`)."""
        model.save(self.path / MODEL)
        if detector is not None:
            detector.save(self.path / NOVELTY)
        write_json(self.path / METRICS, metrics)
        write_table(self.path / HISTORY, history)
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
        raise NotAModelError(
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
            from transfer.core import extras

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
        raise NotAModelError(
            f"{path} is neither a run directory (with {MODEL}) nor an export (with {', '.join(EXPORT_FILES.values())}). "
            f"Pass the --out folder of `transfer train` or `transfer export`, or an exported .tflite or .onnx file."
            f"{_folder_hint(path)}"
        ) from None


def _folder_hint(path: Path) -> str:
    """For a run's own model file given in place of the run: its folder is what to pass."""
    return f" {path.name} is a run's model file: pass its folder, {path.parent}." if path.name in (MODEL, CHECKPOINT) else ""


def write_evaluation(evaluation, out_dir: Path, draw: Callable[[Path], None]) -> None:
    """An `Evaluation` as metrics.json/.csv, confusion_matrix.csv, errors.csv and skipped.csv, and
    what `draw(staging)` adds (the confusion matrix's picture), published together."""
    with staged(out_dir, "evaluation") as staging:
        write_json(staging / METRICS, {**evaluation.summary, "per_class": evaluation.per_class.to_dict(orient="index")})
        evaluation.per_class.to_csv(staging / METRICS_CSV)
        evaluation.confusion.to_csv(staging / CONFUSION_CSV)
        draw(staging)
        errors = evaluation.errors.drop(columns="correct").rename(columns={"label": "true_label", "top": "top_3"})
        write_table(staging / ERRORS_CSV, errors)
        write_table(staging / SKIPPED, evaluation.skipped)


def default_evaluation_dir(model: Path) -> Path:
    """`RUN/evaluation` for a run; `NAME-evaluation` beside an export folder (of a file: its folder),
    which holds only what its runtime reads."""
    opened = open_model(model)
    return opened.path / EVALUATION if isinstance(opened, Run) else opened.path.parent / f"{opened.path.name}-{EVALUATION}"


@dataclass(frozen=True)
class Comparison:
    """A folder written by `transfer compare`: one split, one run per backbone, a leaderboard."""

    path: Path

    @property
    def split_file(self) -> Path:
        return self.path / SPLIT

    def run_dir(self, folder: str) -> Path:
        """The run of the backbone whose folder name is `folder` (`transfer.models.registry.backbone_folder`)."""
        return self.path / RUNS / folder

    def write_data(self, folder) -> None:
        write_table(self.split_file, as_manifest(folder.examples, folder.multi_label))
        write_table(self.path / SKIPPED, folder.skipped)

    def relocate_runs(self, final: Path) -> None:
        """Points each run's recorded manifest at the comparison's split where it will be published."""
        for config_file in (self.path / RUNS).glob(f"*/{CONFIG}"):
            config = read_json(config_file)
            config["manifest"] = str(Path(final) / SPLIT)
            write_json(config_file, config)

    def write_leaderboard(self, leaderboard: pd.DataFrame, config: dict) -> None:
        """The leaderboard's CSV and the comparison's options; the CSV last, as it marks a finished
        comparison (the caller draws `leaderboard.png` first)."""
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

    def run_dir(self, fold: int, folder: str) -> Path:
        """Fold `fold`'s run of the backbone whose folder name is `folder` (`transfer.models.registry.backbone_folder`)."""
        return self.fold_dir(fold) / folder

    def relocate_runs(self, final: Path) -> None:
        """Points each run's recorded manifest (its `manifest` and `data`) at its fold's where it will
        be published."""
        for config_file in self.path.glob(f"fold-*/*/{CONFIG}"):
            config = read_json(config_file)
            config["manifest"] = config["data"] = str(Path(final).resolve() / config_file.parent.parent.name / "train.csv")
            write_json(config_file, config)

    def write_results(self, table: pd.DataFrame, summary: dict) -> None:
        """`cv.json`, then `cv.csv` (last: it marks a finished cross-validation; the caller draws
        `cv.png` first)."""
        write_json(self.path / CV_JSON, summary)
        write_table(self.path / CV_CSV, table)


def as_manifest(examples: pd.DataFrame, multi_label: bool) -> pd.DataFrame:
    """Images with their `label` (and `split`) as a manifest that `train --manifest` reads back: a
    multi-label one's label sets in a `labels` column."""
    return examples.rename(columns={"label": "labels"}) if multi_label else examples


def data_folders(run: Path) -> list[str]:
    """The folders a run's images came from (`config.json`), where none of its outputs may go."""
    return list(Run(Path(run)).config().get("data_folders", []))


def _table_or_empty(path: Path, columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return read_table(path) if path.is_file() else pd.DataFrame(columns=columns)
