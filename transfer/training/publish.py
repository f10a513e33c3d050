"""The end of a training run: measure the final model on the validation split and publish the run.

`publish_run` is the sequence; each step is one function: predict the validation images
(`val_probabilities`), fit the temperature (`calibrate`) and put it in the model
(`with_temperature`), fit the open-set detector (`transfer.training.detection`), pick a multi-label run's thresholds (`pick_thresholds`), measure
(`measure`: the metrics of `transfer.metrics.classification` or `transfer.metrics.multilabel`,
the ones `transfer evaluate` computes), gather what `metrics.json` and `config.json` hold
(`run_metrics`, `run_config`), and write, plot and publish (`write_run`). Only the chief of a
multi-worker cluster publishes (`transfer.training.distribute`).
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transfer.core.errors import raise_if_stop_requested
from transfer.outputs import artifacts, layout, publishing
from transfer.outputs.figures import plot_curves
from transfer.training.detection import detector_record, fit_detector
from transfer.training.distribute import worker_index
from transfer.training.state import RunState, frozen_features

if TYPE_CHECKING:
    import keras
    import numpy as np
    import pandas as pd

    from transfer.metrics.calibration import Calibration


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    history: pd.DataFrame
    model: keras.Model


def publish_run(run: RunState) -> TrainResult:
    """Measures the final model on validation and writes the run; only the chief publishes it."""
    import pandas as pd

    probabilities, labels = held_out_probabilities(run)
    calibration = calibrate(run, probabilities, labels=labels)
    if calibration is not None and calibration.applied:
        run.model, probabilities = with_temperature(run.model, probabilities, calibration.temperature)
    thresholds = pick_thresholds(run, probabilities)
    metrics = run_metrics(run, measure(run, probabilities, thresholds, labels=labels), calibration)
    history = pd.concat(run.histories, ignore_index=True)
    detector = fit_detector(run, refit=refitted(run))
    config = {**run_config(run, calibration, thresholds), "unknown_detector": detector_record(run, detector)}
    write_run(run, metrics, config, history, detector)
    return TrainResult(run.out_dir, metrics, history, run.model)


def refitted(run: RunState) -> bool:
    """Whether the final head was fitted on the training and validation images (`--refit`), its
    metrics then measured on the out-of-fold probabilities of `out_of_fold.csv`."""
    return run.best_stage == "logistic" and bool((run.record.get("logistic") or {}).get("refit"))


def held_out_probabilities(run: RunState) -> tuple[np.ndarray, np.ndarray]:
    """`(probabilities, label indices)` the run is measured and calibrated on: with `--refit`, the
    out-of-fold ones of every training and validation image (the head saw all of them); else the
    final model's on the validation images (`val_probabilities`)."""
    if not refitted(run):
        return val_probabilities(run), run.data.val_labels
    import numpy as np

    table = publishing.read_table(run.files.path / layout.OUT_OF_FOLD_CSV)
    names = run.folder.class_names
    index = {name: i for i, name in enumerate(names)}
    probabilities = table[[f"p:{name}" for name in names]].to_numpy(dtype=np.float64)
    return probabilities, table["label"].astype(str).map(index).to_numpy()


def val_probabilities(run: RunState) -> np.ndarray:
    """The final model's probabilities for the validation images: from the head on the cached
    pooled features while the backbone is the frozen one, else from the whole model."""
    if run.best_stage == "logistic" or (run.best_stage == "frozen" and frozen_features(run) != "in_loop"):
        from transfer.training.stages import head_val_probabilities

        return head_val_probabilities(run)
    return run.model.predict(run.data.val_data.map(lambda pixels, label: pixels), verbose=0)


def calibrate(run: RunState, probabilities: np.ndarray, labels: np.ndarray | None = None) -> Calibration | None:
    """Fits the temperature on the held-out `probabilities` (`--calibrate temperature`; with `--refit`
    the out-of-fold ones, the temperature then applied to the head fitted on all the images; by default
    the validation split's `labels`) and says
    what it did; `None` with `--calibrate none`, and for multi-label runs, whose thresholds decide instead."""
    if run.options.calibrate == "none":
        return None
    if run.options.multi_label:
        run.reporter.message("Calibration: a multi-label run is not temperature-scaled (a softmax temperature does not "
                             "apply to independent sigmoids); each label's threshold is chosen on the validation split instead.")
        return None
    from transfer.metrics.calibration import calibrate as fit

    calibration = fit(probabilities, run.data.val_labels if labels is None else labels)
    if labels is None or not refitted(run):
        run.reporter.message(calibration.describe())
    else:
        run.reporter.message(calibration.describe().replace("validation split", "out-of-fold probabilities").replace("validation ", "out-of-fold ") + (
            " Fitted on the out-of-fold probabilities, applied to the head refit on all the images." if calibration.applied else ""))
    return calibration


def with_temperature(model: keras.Model, probabilities: np.ndarray, temperature: float) -> tuple[keras.Model, np.ndarray]:
    """`model` with `temperature` as its last layer, and `probabilities` scaled by it (float32)."""
    from transfer.metrics.calibration import scale
    from transfer.models import classifier

    return classifier.with_temperature(model, temperature), scale(probabilities, temperature).astype("float32")


def pick_thresholds(run: RunState, probabilities: np.ndarray) -> dict[str, float] | None:
    """A multi-label run's threshold of each label, the best F1 on the validation split
    (`transfer.metrics.multilabel.choose_thresholds`), said; `None` for a single-label run."""
    if not run.options.multi_label:
        return None
    from transfer.metrics.multilabel import choose_thresholds

    chosen = choose_thresholds(probabilities, run.data.val_labels)
    thresholds = {name: float(t) for name, t in zip(run.folder.class_names, chosen)}
    run.reporter.message("Thresholds chosen on the validation split (the best F1 of each label): "
                         + ", ".join(f"{name} {t:.2f}" for name, t in thresholds.items()) + ".")
    return thresholds


def measure(run: RunState, probabilities: np.ndarray, thresholds: dict[str, float] | None, *, labels: np.ndarray | None = None) -> dict:
    """The held-out scores of `metrics.json` (`val_`: on the validation split, or with `--refit` out of
    fold): accuracy and log loss; for multi-label runs the share of exact label sets as
    `val_accuracy`, the mean binary log loss, mAP, micro and macro F1."""
    import numpy as np

    names = run.folder.class_names
    labels = run.data.val_labels if labels is None else labels
    if thresholds is None:
        from transfer.metrics import classification

        summary = classification.measure(probabilities, labels, names).summary
        return {"val_accuracy": summary["accuracy"], "val_loss": summary["log_loss"]}
    from transfer.metrics import multilabel

    summary, _ = multilabel.measure(probabilities, labels, np.array([thresholds[name] for name in names]), names)
    return {"val_accuracy": summary["exact_match"], "val_loss": summary["log_loss"],
            "val_map": summary["mean_average_precision"], "val_micro_f1": summary["micro_f1"],
            "val_macro_f1": summary["macro_f1"]}


def run_metrics(run: RunState, scores: dict, calibration: Calibration | None) -> dict:
    """What the run's `metrics.json` holds: the held-out `scores` and how they were measured
    (`measured_on`, `estimate`), the counts (`num_train`: the images the final model was fitted on),
    the stages and their seconds, and the calibration."""
    folder, refit = run.folder, refitted(run)
    counts = len(run.data.train_paths), len(run.data.val_paths)
    return {
        **scores,
        "measured_on": "out_of_fold" if refit else "validation",
        "estimate": _estimate(run, refit),
        "num_classes": len(folder.class_names),
        "num_train": sum(counts) if refit else counts[0],
        "num_val": counts[1],
        "num_skipped": len(folder.skipped),
        "num_duplicates": len(folder.duplicates),
        "best_stage": run.best_stage,
        "epochs_run": run.epoch,
        "stage_seconds": run.stages_done,
        "train_seconds": round(time.perf_counter() - run.started, 1),
        "resumed": "resumed_at" in run.record,
        "val_ece": None if calibration is None else calibration.ece_after,
        "calibration": None if calibration is None else calibration.to_dict(),
    }


def _estimate(run: RunState, refit: bool) -> str:
    """How `metrics.json`'s scores were measured, in words."""
    if not refit:
        return f"the final model on the {len(run.data.val_paths)} validation images, which it was not fitted on"
    fit = run.record["logistic"]
    return (f"{fit['estimate_folds']}-fold cross-validation over all {fit['images']} training and validation images, made "
            f"before the refit: each image's probabilities from a logistic regression fitted without it (C chosen within "
            f"each fold, as for the final fit, which saw every image); out_of_fold.csv holds them")


def run_config(run: RunState, calibration: Calibration | None, thresholds: dict[str, float] | None) -> dict:
    """What the run's `config.json` holds: every option as it was used, the data, the classes, what
    the run chose (temperature, thresholds) and where it ran."""
    import keras
    import tensorflow as tf

    from transfer.training.distribute import strategy_name

    folder, options = run.folder, run.options
    return {
        **dataclasses.asdict(options),
        "data": folder.source,
        "data_folders": run.record.get("data_folders", []),
        "class_names": folder.class_names,
        "class_weights": run.data.class_weight,
        # Every option as it was used: the patience of each stage run, no split share where the split was given.
        "patience": {stage: options.stage_patience(epochs) for stage, epochs in
                     (("frozen", options.epochs), ("finetune", options.finetune_epochs), ("scratch", options.epochs))
                     if stage in run.stages_done and stage != "logistic"},
        "val_split": None if options.val_dir else options.val_split,
        "refit": refitted(run),  # --refit as it applied: the final head fitted on train + validation
        **({} if options.finetune_epochs else {"finetune_lr": None, "finetune_schedule": None, "unfreeze": None}),  # no stage 2
        "transfers": options.transfers,  # a backbone under a new head (pretrained, from a file or preset, or from source_run)
        "pretrained": options.transfers and options.weights != "none",  # with learned weights
        "source_run": source_record(options.source_run),
        "backbone_sha256": run.record.get("backbone_sha256"),
        "weights_source": run.spec.weights_provenance() if options.weights == "imagenet" else None,  # package, licence
        "logistic": run.record.get("logistic"),
        "temperature": calibration.temperature if calibration is not None else None,  # in the model's last layer
        "thresholds": thresholds,  # multi-label: each label's, chosen on validation
        "probe": run.record.get("probe"),  # --backbone auto: the candidates ranked, the winner trained
        "frozen_features": frozen_features(run),
        "strategy_resolved": strategy_name(run.strategy),
        "replicas": run.strategy.num_replicas_in_sync,
        "global_batch_size": run.data.global_batch,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
    }


def source_record(source: str | None) -> dict | None:
    """Where the reused backbone came from: the run's path and the SHA-256 of its model file."""
    if source is None:
        return None
    run = artifacts.Run.open(source)
    return {"path": str(Path(source).resolve()), "model_sha256": publishing.sha256(run.model_file)}


def write_run(run: RunState, metrics: dict, config: dict, history: pd.DataFrame, detector=None) -> None:
    """Writes the model, metrics, config, history, open-set detector and curves into the staging folder,
    then publishes it at `run.out_dir` (the chief), or removes it (another worker of a cluster)."""
    run.files.write_results(run.model, metrics=metrics, config=config, history=history, detector=detector)
    plot_curves(history, run.files.path / layout.CURVES)
    raise_if_stop_requested()  # the last safe point before the run is published
    if worker_index() is not None:  # a non-chief worker: its copy was only needed while training
        shutil.rmtree(run.files.path)
    else:
        run.files.drop_resume_state()
        publishing.publish(run.files.path, run.out_dir)
