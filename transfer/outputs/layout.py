"""The names of every file and folder `transfer` writes: the one place that says where things go.

| output | written by | files |
|---|---|---|
| run directory | `train` | `model.keras`, `labels.txt`, `config.json`, `metrics.json`, `history.csv`, `curves.png`, `split.csv`, `skipped.csv`, `duplicates.csv`; `novelty.npz` (the open-set detector, unless `--unknown off`); `out_of_fold.csv` where the head was refit on every image (`--refit`) (`checkpoint.keras` while training only) |
| export | `export` | by `--format`: `saved_model.pb` and `variables/` (TensorFlow's), `model.tflite` or `model.onnx`; and `labels.txt`, `config.json` (the run's, with an `export` section: format, quantization, the check's agreement) |
| evaluation | `evaluate` (default `MODEL/evaluation`) | `metrics.json`, `metrics.csv`, `confusion_matrix.csv` and `.png`, `reliability.csv` and `.png`, `errors.csv`, `skipped.csv`; with `--unknown-dir`, `unknown.csv` and `.png` |
| report | `report` (default `RUN_DIR/report.html`) | one self-contained HTML file; with `--test DIR`, also the evaluation on DIR (`RUN_DIR/evaluation`) |
| visualization | `visualize` (default `RUN_DIR/visualize`) | `filters.png`, `feature_maps_<layer>.png` |
| comparison | `compare` | `split.csv`, `skipped.csv`, `runs/<backbone>/` (run directories), `config.json`, `leaderboard.csv` and `.png` |
| probe | `probe` | `probe.csv`, `probe.png`, `config.json`; with `--curve`, `curve.csv` and `curve.png` |
| audit | `audit` | `audit.csv`, `audit.html`, `clean.csv`, `out_of_fold.csv`, `folds.csv`, `skipped.csv`, `config.json` |

A lr-find writes `lr_find.csv` and `.png`; a cross-validation `folds.csv`, `fold-K/`, `cv.csv`,
`.json` and `.png`; `transfer features` one Parquet file. This module imports nothing of the
project: `transfer.outputs.artifacts` reads and writes these folders, `transfer.outputs.publishing` writes them safely.
"""

from __future__ import annotations

from pathlib import Path

# A run directory, as published ...
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
#: The open-set detector (`transfer.metrics.novelty.NoveltyDetector.save`): its arrays and threshold.
NOVELTY = "novelty.npz"
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
#: A multi-label evaluation: each label's precision-recall curve, in place of the confusion matrix's picture.
PRECISION_RECALL_PNG = "precision_recall.png"
ERRORS_CSV = "errors.csv"
#: A single-label evaluation's reliability diagram and its bins (`transfer.metrics.calibration.reliability`).
RELIABILITY_PNG = "reliability.png"
RELIABILITY_CSV = "reliability.csv"
#: `evaluate --unknown-dir`: each image's novelty score, and the two distributions drawn.
UNKNOWN_CSV = "unknown.csv"
UNKNOWN_PNG = "unknown.png"
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
#: `transfer audit`: the flagged images, the page, the manifest without label issues, every image's probabilities.
AUDIT_CSV = "audit.csv"
AUDIT_HTML = "audit.html"
CLEAN_CSV = "clean.csv"
OUT_OF_FOLD_CSV = "out_of_fold.csv"  # also a run's whose head was refit on every image (`--refit`): what it is measured on
#: `transfer probe`: the backbones ranked by a linear probe on frozen features, and the data-efficiency curve.
PROBE_CSV = "probe.csv"
PROBE_PNG = "probe.png"
CURVE_CSV = "curve.csv"
CURVE_PNG = "curve.png"


#: The columns of `history.csv`, `skipped.csv` and `duplicates.csv`.
HISTORY_COLUMNS = ["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
SKIPPED_COLUMNS = ["path", "label", "reason"]
DUPLICATE_COLUMNS = ["val_path", "val_label", "train_path", "train_label", "removed"]

# Who owns an output.

#: Every output folder's first file: which kind of output it is, the tool's version and when.
MARKER = ".transfer.json"


#: The single-file outputs: a report (HTML) and features (Parquet, the marker in its schema metadata).
SINGLE_FILES = ("report", "features")


REPORT_GENERATOR = "transfer report"


PARQUET_MARKER = b"transfer"


#: The file name written inside a folder given as `--out` for a one-file output.
FEATURES_FILE = "features.parquet"


#: The outputs of `transfer` that may sit inside another: a run's evaluation and visualization
#: (their default places), a comparison's runs.
NESTED_KINDS = {"run": ("evaluation", "visualization"), "comparison": ("run",), "cross-validation": ("run",)}


def feature_maps_png(layer: str) -> str:
    return f"feature_maps_{layer}.png"


def partial_dir(path: Path, worker: int | None = None) -> Path:
    """The hidden staging folder beside `path` where `path` is written until complete.

    A non-chief worker of a multi-worker run (`worker` = its index) keeps its own copy in
    `.NAME.worker-K.partial` instead, deleted when training ends; only the chief writes `path`.
    """
    path = Path(path)
    return path.parent / (f".{path.name}.partial" if worker is None else f".{path.name}.worker-{worker}.partial")
