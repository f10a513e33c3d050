"""Probabilities you can act on: temperature scaling and the expected calibration error.

A classifier is calibrated when, of the images it gives 0.9, nine in ten are right. Fine-tuned CNNs
are overconfident (Guo et al. 2017, "On Calibration of Modern Neural Networks"); one scalar fixes
most of it: the temperature T in `softmax(logits / T)`, fitted on the validation split by minimising
the negative log-likelihood. Dividing every logit by the same T > 0 keeps their order, so no
prediction changes. The model here outputs probabilities p, whose logits are `log p` up to a
constant, so the calibrated probabilities are `softmax(log p / T)` (`scale`), which the run's model
computes itself in its last layer (`transfer.models.heads.Temperature`), so that predict, evaluate, every
export and the server give them with no extra step.

The expected calibration error (ECE) puts the images in 15 equal-width bins of top-1 confidence and
sums, over the bins, the gap between mean confidence and accuracy, weighted by the bin's share of
the images. This module imports NumPy and SciPy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Equal-width bins of top-1 confidence for the ECE and the reliability diagram.
BINS = 15
#: The temperatures searched, as log T: from 1/20 (sharper) to 20 (flatter).
LOG_T_BOUNDS = (-np.log(20.0), np.log(20.0))
_TINY = 1e-12


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """`softmax(log p / T)` of each row of `probabilities`."""
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), _TINY, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The mean of `-log p[label]` (the log loss)."""
    chosen = np.asarray(probabilities, np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(chosen, _TINY, 1.0))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` (bounded search on
    log T, `LOG_T_BOUNDS`)."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: negative_log_likelihood(scale(probabilities, np.exp(log_t)), labels),
                            bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """One row per confidence bin `(lower, upper]` (the first also holds 0): the images in it, their
    mean top-1 confidence and their accuracy (`None` for an empty bin)."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for index in range(bins):
        inside = which == index
        count = int(inside.sum())
        rows.append({"lower": float(edges[index]), "upper": float(edges[index + 1]), "count": count,
                     "confidence": float(confidence[inside].mean()) if count else None,
                     "accuracy": float(correct[inside].mean()) if count else None})
    return rows


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """The sum over confidence bins of |accuracy - mean confidence| weighted by the bin's share."""
    rows = reliability(probabilities, labels, bins)
    total = sum(row["count"] for row in rows)
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in rows if row["count"]))


@dataclass(frozen=True)
class Calibration:
    """What temperature scaling did on the validation split.

    Attributes:
        temperature: the one applied (1.0 where the fit was not applied).
        fitted: the temperature the fit found (`None` where nothing could be fitted).
        applied: whether the model computes it.
        reason: why it was not applied (`""` where it was): see `calibrate`.
        ece_before, ece_after: the validation ECE without and with the applied temperature.
        log_loss_before, log_loss_after: the validation log loss, likewise.
        held_out_log_loss: the cross-validated log loss of temperature scaling on the validation
            split (each fold scaled by the temperature fitted on the others), against `log_loss_before`.
    """

    temperature: float
    fitted: float | None
    applied: bool
    reason: str
    ece_before: float
    ece_after: float
    log_loss_before: float
    log_loss_after: float
    held_out_log_loss: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """What was done, in one line for the person training."""
        if not self.applied:
            return f"Calibration: no temperature applied, the probabilities stay as trained: {self.reason}."
        return (f"Calibration: temperature {self.temperature:.3g} built into the model (validation ECE {self.ece_before:.3f} -> "
                f"{self.ece_after:.3f}, log loss {self.log_loss_before:.3f} -> {self.log_loss_after:.3f}; no prediction changes).")


#: At most this many folds for the held-out check of a fitted temperature.
CHECK_FOLDS = 5


def calibrate(probabilities: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fits the temperature on `probabilities` of the validation images and says whether to apply it.

    It is applied only where the evidence supports it, which on a few dozen images it often does not:
    - not where every validation image is classified right: the log-likelihood then only grows as T
      falls, so the "fit" is the smallest temperature searched, certainty on every image, and the
      first wrong answer after it costs dearly (measured: a test log loss of 1.50, where the recipe
      without a temperature scores about 0.24);
    - not where it does not lower the log loss on images it was not fitted on: each of up to
      `CHECK_FOLDS` folds of the validation split is scaled by the temperature fitted on the others;
    - not where it raises the validation ECE (a fit can lower the log loss while moving confidence
      away from accuracy, on very few images).
    """
    labels = np.asarray(labels)
    before, loss_before = expected_calibration_error(probabilities, labels), negative_log_likelihood(probabilities, labels)
    kept = dict(temperature=1.0, applied=False, ece_before=before, ece_after=before, log_loss_before=loss_before,
                log_loss_after=loss_before)
    if (np.asarray(probabilities).argmax(axis=1) == labels).all():
        return Calibration(fitted=None, reason=f"every one of the {len(labels)} validation images is classified right, "
                           f"so no temperature can be fitted (the likelihood only grows as it falls)", **kept)
    fitted = fit_temperature(probabilities, labels)
    held_out = held_out_log_loss(probabilities, labels)
    scaled = scale(probabilities, fitted)
    after = expected_calibration_error(scaled, labels)
    if held_out >= loss_before:
        return Calibration(fitted=fitted, reason=f"fitted on the other folds of the validation split, it does not lower "
                           f"the log loss of the images it was not fitted on ({loss_before:.3f} -> {held_out:.3f})",
                           held_out_log_loss=held_out, **kept)
    if after > before:
        return Calibration(fitted=fitted, reason=f"it would raise the validation ECE ({before:.3f} -> {after:.3f})",
                           held_out_log_loss=held_out, **kept)
    return Calibration(temperature=fitted, fitted=fitted, applied=True, reason="", ece_before=before, ece_after=after,
                       log_loss_before=loss_before, log_loss_after=negative_log_likelihood(scaled, labels),
                       held_out_log_loss=held_out)


def held_out_log_loss(probabilities: np.ndarray, labels: np.ndarray, folds: int = CHECK_FOLDS) -> float:
    """The mean log loss of each image scaled by the temperature fitted on the other folds (up to
    `folds`, shuffled with a fixed seed) of `probabilities`."""
    order = np.random.default_rng(0).permutation(len(labels))
    losses = np.zeros(len(labels))
    for part in np.array_split(order, min(folds, len(labels))):
        rest = np.setdiff1d(order, part)
        temperature = fit_temperature(probabilities[rest], labels[rest])
        chosen = scale(probabilities[part], temperature)[np.arange(len(part)), labels[part]]
        losses[part] = -np.log(np.clip(chosen, _TINY, 1.0))
    return float(losses.mean())
