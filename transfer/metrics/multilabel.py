"""Multi-label classification: an image carries zero or more labels.

The model ends in one sigmoid per label (`transfer.models.classifier`), trained with binary cross-entropy.
A label is given to an image when its probability reaches the label's **threshold**: after
training, each label's threshold is the one that maximises its F1 on the validation split, set
halfway between the lowest validation probability it accepts and the highest one below it, so it
does not sit on one image; a label with no positive image in validation keeps 0.5. The thresholds
are stored in the run's `config.json` (`thresholds`, by label) and travel with every export;
`predict`, `evaluate`, the export's check and `serve` apply them (`decide`), and `--threshold`
replaces all of them with one value.

The metrics (`measure`): mean average precision over the labels with a positive image (each
label's area under its precision-recall curve, scikit-learn's `average_precision_score`), micro and
macro F1 of the decisions, each label's precision, recall, F1, AP and support, and the share of
images whose label set is exactly right (subset accuracy). Temperature scaling is not applied: the
thresholds are the calibration a decision needs here, and a softmax temperature does not apply to
independent sigmoids.

This module imports NumPy, pandas and scikit-learn only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfer.core.errors import require

DEFAULT_THRESHOLD = 0.5


#: Between the labels of one image in a manifest's `labels` column and in a run's tables.
LABEL_SEPARATOR = ";"


def split_labels(joined: str) -> list[str]:
    """The labels of a multi-label image from its `label` (`"a;b"`, or `""` for none)."""
    return [label for label in joined.split(LABEL_SEPARATOR) if label]


def multi_hot(joined: pd.Series, class_names: list[str]) -> np.ndarray:
    """`[images, labels]` float32 0/1 targets of multi-label images (`label` = labels joined by `;`)."""
    index = {name: i for i, name in enumerate(class_names)}
    targets = np.zeros((len(joined), len(class_names)), np.float32)
    for row, labels in enumerate(joined):
        targets[row, [index[label] for label in split_labels(labels)]] = 1
    return targets


def choose_thresholds(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per label, the threshold with the best F1 on (`probabilities`, 0/1 `targets`); see the module."""
    from sklearn.metrics import precision_recall_curve

    thresholds = np.full(targets.shape[1], DEFAULT_THRESHOLD)
    for label in range(targets.shape[1]):
        truth, scores = targets[:, label], probabilities[:, label]
        if not truth.any():
            continue
        precision, recall, cuts = precision_recall_curve(truth, scores)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
        cut = cuts[int(np.argmax(f1))]
        below = scores[scores < cut]
        thresholds[label] = (cut + below.max()) / 2 if len(below) else cut / 2
    return thresholds


def check_threshold(override: float | None) -> None:
    """Raises InvalidOptionError unless `override` (`--threshold`) is `None` or in (0, 1)."""
    require(override is None or 0 < override < 1, "--threshold", override, "a probability between 0 and 1 (both excluded)")


def thresholds_of(config: dict, class_names: list[str], override: float | None = None) -> np.ndarray:
    """The thresholds of a run or export (`config.json`), by label in `class_names` order; `override`
    (`--threshold`) for every label."""
    check_threshold(override)
    if override is not None:
        return np.full(len(class_names), float(override))
    stored = config.get("thresholds") or {}
    return np.array([float(stored.get(name, DEFAULT_THRESHOLD)) for name in class_names])


def is_multi_label(config: dict) -> bool:
    """Whether a run's or an export's `config.json` is that of a multi-label model."""
    return bool(config.get("multi_label"))


def decide(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """`[images, labels]` booleans: each label's probability reaches its threshold."""
    return np.asarray(probabilities) >= thresholds


def label_sets(chosen: np.ndarray, class_names: list[str]) -> list[str]:
    """Each row of decisions as its labels joined by `;` (`""` for none), as manifests write them."""
    return [LABEL_SEPARATOR.join(name for name, on in zip(class_names, row) if on) for row in chosen]


def measure(probabilities: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, class_names: list[str]) -> tuple[dict, pd.DataFrame]:
    """`(summary, per_label)`: the metrics of the module's docstring on 0/1 `targets`."""
    from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

    chosen = decide(probabilities, thresholds)
    precision, recall, f1, support = precision_recall_fscore_support(targets, chosen, average=None, zero_division=0)
    present = targets.sum(axis=0) > 0
    ap = np.array([average_precision_score(targets[:, j], probabilities[:, j]) if present[j] else np.nan
                   for j in range(len(class_names))])
    per_label = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "average_precision": ap,
                              "support": support, "threshold": thresholds}, index=pd.Index(class_names, name="label"))
    summary = {
        "mean_average_precision": float(np.nanmean(ap)) if present.any() else None,
        "micro_f1": float(f1_score(targets, chosen, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(targets, chosen, average="macro", zero_division=0)),
        "exact_match": float(np.mean((chosen == targets.astype(bool)).all(axis=1))),
        "label_accuracy": float(np.mean(chosen == targets.astype(bool))),
        "log_loss": binary_log_loss(probabilities, targets),
        "num_images": len(targets),
        "images_without_label": int((targets.sum(axis=1) == 0).sum()),
    }
    return summary, per_label


def decision_counts(chosen: np.ndarray, targets: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Each label's true and false positives and negatives of the decisions `chosen` (booleans)
    against 0/1 `targets`: the multi-label confusion table."""
    truth = np.asarray(targets).astype(bool)
    return pd.DataFrame({
        "true_positives": (chosen & truth).sum(axis=0), "false_positives": (chosen & ~truth).sum(axis=0),
        "false_negatives": (~chosen & truth).sum(axis=0), "true_negatives": (~chosen & ~truth).sum(axis=0),
    }, index=pd.Index(class_names, name="label"))


def binary_log_loss(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The mean over images and labels of the binary cross-entropy."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))


def worst_mistake(probabilities: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per image, how sure its surest wrong decision was: a label given with probability p (p), or
    one missed (1 - p); 0 where every decision is right."""
    chosen = decide(probabilities, thresholds)
    wrong = chosen != targets.astype(bool)
    sureness = np.where(chosen, probabilities, 1 - probabilities)
    return np.where(wrong, sureness, 0).max(axis=1)
