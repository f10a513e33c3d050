"""The metrics of a single-label classifier's softmax scores against the true classes, the one path
both `transfer evaluate` (`transfer.evaluation.evaluate.measure`) and the end of a training run
(`transfer.training.publish`) take.

Every number is scikit-learn's: accuracy, log loss (the scores renormalised in float64 first),
per-class precision, recall, F1 and support with the macro and weighted averages over the classes
present in the data (a class absent from the data is listed with support 0 and left out of the
averages), and the confusion matrix; top-k accuracy counts an image right when its class is among
its k most probable, ties broken by class order; the calibration error is
`transfer.metrics.calibration`'s. NumPy, pandas and scikit-learn only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from transfer.metrics.calibration import expected_calibration_error


@dataclass
class ClassMetrics:
    """What `measure` computes.

    Attributes:
        scores: the scores as measured: float64, each row summing to 1.
        predicted: each image's most probable class (an index).
        summary: accuracy, top-k accuracy and its k, log loss, ECE, the classes absent from the
            data, macro and weighted F1, the number of images.
        per_class: precision, recall, F1 and support per class, then the macro and weighted rows.
        confusion: counts, rows the true class and columns the predicted class.
    """

    scores: np.ndarray
    predicted: np.ndarray
    summary: dict
    per_class: pd.DataFrame
    confusion: pd.DataFrame


def measure(scores: np.ndarray, truth: Sequence[int], class_names: Sequence[str], *, top_k: int = 3) -> ClassMetrics:
    """The metrics of `scores` (`[images, classes]` softmax, in `class_names` order) against `truth`
    (each image's class index); see the module."""
    from sklearn import metrics as skm

    scores = np.asarray(scores, dtype=np.float64)
    scores = scores / scores.sum(axis=1, keepdims=True)  # exact normalisation for log loss
    truth = np.asarray(truth)
    predicted = scores.argmax(axis=1)
    classes = np.arange(len(class_names))
    per_class = _per_class(truth, predicted, class_names)
    summary = {
        "accuracy": float(skm.accuracy_score(truth, predicted)),
        **top_k_accuracy(scores, truth, top_k),
        "log_loss": float(skm.log_loss(truth, scores, labels=classes)),
        "ece": expected_calibration_error(scores, truth),  # 15 bins of top-1 confidence
        "classes_absent": [name for i, name in enumerate(class_names) if i not in set(truth.tolist())],
        "macro_f1": float(per_class.loc["macro avg", "f1"]),
        "weighted_f1": float(per_class.loc["weighted avg", "f1"]),
        "num_images": len(truth),
    }
    confusion = pd.DataFrame(skm.confusion_matrix(truth, predicted, labels=classes), index=list(class_names), columns=list(class_names))
    confusion.index.name, confusion.columns.name = "true", "predicted"
    return ClassMetrics(scores, predicted, summary, per_class, confusion)


def top_k_accuracy(scores: np.ndarray, truth: np.ndarray, top_k: int) -> dict:
    """`{"top_k_accuracy", "top_k"}`: the share of images whose class is among their `top_k` most
    probable (k at most the number of classes), ties broken by class order."""
    k = min(top_k, scores.shape[1])
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {"top_k_accuracy": float(np.mean((ranked == truth[:, None]).any(axis=1))), "top_k": k}


def _per_class(truth: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_fscore_support

    classes = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=classes, zero_division=0)
    per_class = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support}, index=list(class_names))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            truth, predicted, labels=np.unique(truth), average=average, zero_division=0  # classes in the data
        )
        per_class.loc[f"{average} avg"] = [p, r, f, len(truth)]
    per_class["support"] = per_class["support"].astype(int)
    per_class.index.name = "class"
    return per_class
