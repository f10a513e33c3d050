"""How well a frozen backbone's features suit a dataset, without training: the probe's numbers.

- **Cross-validated linear probe** (`probe_scores`): stratified K-fold, each fold scored by the
  logistic regression of `train --head logistic` (`transfer.metrics.logistic.logistic_regression`) fitted on
  the other folds: accuracy and log loss per fold. A linear probe on frozen features predicts how
  well a backbone transfers (Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?").
- **LogME** (`log_me`; You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning"): the log marginal likelihood (evidence) of a Bayesian linear regression from
  the features to each class's one-hot column, maximised over its prior precision alpha and noise
  precision beta by the paper's fixed-point iteration, divided by the number of images and
  averaged over the classes. It needs no fitting choices (no C, no folds) and ranks backbones
  much as fine-tuning does; higher is better; it compares backbones on the same images only. It
  was chosen over LEEP and NCE because those need the backbone's own source-task classifier, which
  a model file or a headless backbone does not have.
- **The data-efficiency curve** (`curve_subsets`, `power_law`): the probe on growing, nested,
  stratified subsets of the training images, scored on the same held-out images.

This module imports NumPy and scikit-learn only (and the logistic fit of `transfer.metrics.logistic`).
"""

from __future__ import annotations

import numpy as np


def log_me(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of `features` (`[N, D]`) for class indices `labels`: the mean over classes of the
    maximum evidence per image (the paper's Algorithm 1, on the eigendecomposition of F^T F)."""
    f = np.asarray(features, np.float64)
    n, d = f.shape
    s, v = np.linalg.eigh(f.T @ f)
    s = np.clip(s, 0, None)
    evidences = []
    for k in np.unique(labels):
        y = (labels == k).astype(np.float64)
        evidences.append(_max_evidence(f, y, s, v) / n)
    return float(np.mean(evidences))


def _max_evidence(f: np.ndarray, y: np.ndarray, s: np.ndarray, v: np.ndarray) -> float:
    """max over (alpha, beta) of log p(y | F, alpha, beta), by the fixed point of MacKay's updates:
    gamma = sum(beta s / (alpha + beta s)), alpha = gamma / |m|^2, beta = (N - gamma) / |y - F m|^2."""
    n, d = f.shape
    projected = v.T @ (f.T @ y)  # F^T y in the eigenbasis
    alpha, beta = 1.0, 1.0
    for _ in range(100):
        m = v @ (beta * projected / (alpha + beta * s))  # the posterior mean of the weights
        gamma = float(np.sum(beta * s / (alpha + beta * s)))
        residual = float(np.sum((y - f @ m) ** 2))
        new_alpha = gamma / max(float(m @ m), 1e-12)
        new_beta = (n - gamma) / max(residual, 1e-12)
        converged = abs(new_alpha / new_beta - alpha / beta) <= 1e-6 * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    return evidence(f, y, alpha, beta, s, v)


def evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float, s: np.ndarray, v: np.ndarray) -> float:
    """log p(y | F, alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2pi - beta/2 |y - F m|^2
    - alpha/2 |m|^2 - 1/2 log |alpha I + beta F^T F|, with m the posterior mean."""
    n, d = f.shape
    m = v @ (beta * (v.T @ (f.T @ y)) / (alpha + beta * s))
    return float(d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                 - beta / 2 * np.sum((y - f @ m) ** 2) - alpha / 2 * (m @ m) - 0.5 * np.sum(np.log(alpha + beta * s)))


def probe_scores(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, num_classes: int, *, seed: int) -> dict:
    """Accuracy and log loss of the linear probe on each held-out fold (`folds`: 1..K per image),
    their mean and sample standard deviation."""
    from sklearn.metrics import log_loss

    from transfer.metrics.logistic import logistic_regression

    accuracy, loss = [], []
    for fold in np.unique(folds):
        held_out = folds == fold
        regression, _, _ = logistic_regression(features[~held_out], labels[~held_out], num_classes, seed=seed)
        probabilities = np.zeros((int(held_out.sum()), num_classes))
        probabilities[:, regression.classes_] = regression.predict_proba(features[held_out])
        accuracy.append(float(np.mean(probabilities.argmax(axis=1) == labels[held_out])))
        loss.append(float(log_loss(labels[held_out], probabilities, labels=np.arange(num_classes))))
    return {"accuracy": float(np.mean(accuracy)), "accuracy_sd": float(np.std(accuracy, ddof=1)),
            "log_loss": float(np.mean(loss)), "log_loss_sd": float(np.std(loss, ddof=1)), "folds": len(accuracy)}


#: Training images per class on the curve, as far as the data goes.
CURVE_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def curve_subsets(labels: np.ndarray, draws: int, seed: int) -> dict[tuple[int, int], np.ndarray]:
    """`{(draw, per_class): indices}`: for each draw, every class's images in a random order of
    their own (seeded by `seed` and the draw), and each subset the first `per_class` of each class,
    so the subsets of a draw are nested and stratified; the steps go as far as the smallest class."""
    smallest = int(np.bincount(labels).min())
    steps = [n for n in CURVE_STEPS if n <= smallest] + ([smallest] if smallest not in CURVE_STEPS else [])
    subsets = {}
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        orders = {k: rng.permutation(np.flatnonzero(labels == k)) for k in np.unique(labels)}
        for n in steps:
            subsets[(draw, n)] = np.sort(np.concatenate([order[:n] for order in orders.values()]))
    return subsets


def power_law(per_class: np.ndarray, error: np.ndarray) -> tuple[float, float]:
    """`(a, b)` of error = a * per_class^-b, fitted by least squares on the logs (points with a
    positive error only)."""
    keep = (error > 0) & (per_class > 0)
    if keep.sum() < 2:
        raise ValueError("a power law needs two points with an error above 0")
    slope, intercept = np.polyfit(np.log(per_class[keep]), np.log(error[keep]), 1)
    return float(np.exp(intercept)), float(-slope)
