"""The logistic regression of `--head logistic`, fitted by scikit-learn on frozen features: one fit
for the head, the probe, the audit and LogME's neighbour, and its weights as a Keras softmax layer's.
Imports NumPy and scikit-learn only."""

from __future__ import annotations

import warnings

import numpy as np


def logistic_regression(features: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
                        balanced: bool = False):
    """`(pipeline, C, folds)`: scikit-learn's multinomial logistic regression on standardized
    `features`, its inverse regularization C chosen by stratified `folds`-fold cross-validation of
    the log loss (up to 5 folds, as many as the smallest class allows; C = 1 where a class has one
    image); `balanced` weighs each class by n_samples / (n_classes * n_class)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(5, np.bincount(labels, minlength=num_classes).min()))
    weights = "balanced" if balanced else None
    if folds < 2:
        regression = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight=weights))
        return regression.fit(features, labels), 1.0, folds
    with warnings.catch_warnings():  # scikit-learn 1.8 announces renamed parameters and attributes
        warnings.simplefilter("ignore", FutureWarning)
        regression = make_pipeline(StandardScaler(), LogisticRegressionCV(
            Cs=10, cv=folds, scoring="neg_log_loss", max_iter=5000, class_weight=weights, random_state=seed
        )).fit(features, labels)
    return regression, float(np.ravel(regression[-1].C_)[0]), folds


def stratified_folds(labels: np.ndarray, num_classes: int, *, seed: int) -> np.ndarray | None:
    """Each image's fold, 1 to K: stratified, shuffled with `seed`, K up to 5 and as many as the
    smallest class allows (the rule `logistic_regression` chooses its C by); `None` where that is
    fewer than 2."""
    from sklearn.model_selection import StratifiedKFold

    count = int(min(5, np.bincount(labels, minlength=num_classes).min()))
    if count < 2:
        return None
    folds = np.zeros(len(labels), dtype=int)
    splitter = StratifiedKFold(count, shuffle=True, random_state=seed % 2**32)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels), start=1):
        folds[held_out] = fold
    return folds


def logistic_out_of_fold(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, num_classes: int, *,
                         seed: int, balanced: bool = False, after_each=None) -> np.ndarray:
    """`[images, classes]` probabilities, each row from the `logistic_regression` fitted on the other
    folds' images, its C chosen again within them by the same rule as a fit on all (nested
    cross-validation): an honest estimate of that fit. `after_each()` is called as each fold is done."""
    probabilities = np.zeros((len(labels), num_classes))
    for fold in np.unique(folds):
        held_out = folds == fold
        regression, _, _ = logistic_regression(features[~held_out], labels[~held_out], num_classes, seed=seed, balanced=balanced)
        probabilities[np.ix_(held_out, regression.classes_)] = regression.predict_proba(features[held_out])
        if after_each is not None:  # progress: one fold done
            after_each()
    return probabilities


def cross_validated_losses(regression) -> dict:
    """`{"Cs": grid, "cv_log_loss": mean held-out log loss at each C}` of a fitted `logistic_regression`
    (what chose its C, for the report), `{}` where no cross-validation was possible."""
    model = regression[-1]
    if not hasattr(model, "Cs_"):
        return {}
    scores = np.asarray(next(iter(model.scores_.values())), dtype=float)  # [folds, Cs(, l1 ratios)] of -log loss
    losses = -scores.reshape(scores.shape[0], len(model.Cs_), -1).mean(axis=(0, 2))
    return {"Cs": [float(c) for c in model.Cs_], "cv_log_loss": [float(v) for v in losses]}


def linear_weights(regression) -> tuple[np.ndarray, np.ndarray]:
    """`(coef, intercept)` of a fitted scikit-learn logistic regression, alone or after a
    `StandardScaler` in a pipeline, on the raw features: a scaler's z = (x - mean) / scale is folded
    in, w.z + b = (w / scale).x + b - w.(mean / scale)."""
    steps = getattr(regression, "steps", [(None, regression)])
    model = steps[-1][1]
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if len(steps) == 2:
        scaler = steps[0][1]
        coef = coef / scaler.scale_
        intercept = intercept - coef @ scaler.mean_
    return coef, intercept


def softmax_weights(regression, num_classes: int) -> list[np.ndarray]:
    """`[kernel, bias]` of a softmax layer with the probabilities of a fitted scikit-learn logistic
    regression (`linear_weights`): its coefficients for several classes; for two, `[0, w]` and
    `[0, b]`, since softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]."""
    coef, intercept = linear_weights(regression)
    if num_classes == 2:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return [coef.T.astype(np.float32), intercept.astype(np.float32)]
