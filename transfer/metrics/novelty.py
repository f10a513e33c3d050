"""Novelty scores: how far an image lies from the classes a model was trained on ("none of these").

A classifier trained on five flowers gives a photo of a dog, a blank wall or noise a probability
for each flower, often a high one. A novelty score measures instead how unlike the training images
an image is; beyond a threshold the answer is `unknown`. Higher scores are more novel. The scores:

- `max_softmax`: 1 - the highest class probability (Hendrycks & Gimpel 2017, the baseline).
- `energy`: -logsumexp(logits) (Liu et al. 2020, temperature 1); a logistic head's logits are its
  decision function (`logits_from_decision`).
- `knn`: the distance from the L2-normalised pooled features to the k-th nearest L2-normalised
  training feature (Sun et al. 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors").
  The paper uses k = 50 of 50,000 CIFAR-10 images and k = 1,000 of ImageNet's 1.28 million, about
  one in a thousand; here `knn_k` keeps that ratio, at least 1: k = 1 for the few hundred images a
  small dataset has.
- `mahalanobis`: the smallest squared Mahalanobis distance from the pooled features to a class
  mean, under one covariance shared by the classes (Lee et al. 2018, on the final features only,
  without their input perturbation or layer ensemble), estimated with Ledoit-Wolf shrinkage
  (scikit-learn's `LedoitWolf`) on the features less their class mean, since a few hundred images
  cannot estimate a full covariance in 1,280 dimensions.
- `mahalanobis_l2`: the same on L2-normalised features (as Mueller & Hein 2025, "Mahalanobis++",
  propose): raw pooled features of blank images lie near the class means in Mahalanobis distance
  (measured AUROC 0.58-0.60 against real photos, benchmarks/novelty.py), normalised ones do not.
- `knn_class`: min over classes of the k-th nearest distance within the class (`knn_predicted`:
  within the classifier's argmax class). With k = 1 `knn_class` equals `knn`.
- `rmd`, `rmd_l2`: relative Mahalanobis (Ren et al. 2021): `mahalanobis` less the distance to a
  background Gaussian of all the training features (Ledoit-Wolf), raw and L2-normalised.
- `knn_msp`, `knn_msp_max`: `knn` and `max_softmax`, each standardised by its held-out in-class
  scores' mean and sd: their sum, or their maximum (a union of two thresholds).
Every score is matrix products, L2 norms, top-k, square roots and elementwise operations on plain
arrays (`state`): a Keras layer can compute it inside an exported graph.

The threshold (`fit_threshold`) is set on held-out folds: the training images are split in K
stratified folds (up to 5); each fold is scored against a bank, statistics or classifier fitted on
the other folds, since a training image scored against itself is its own nearest neighbour; the
threshold is the (1 - share) quantile of these out-of-fold scores, so about `share` (2% by default)
of in-class images are answered `unknown`. The detector kept for use is then fitted on all the
training images. Fewer than `MIN_IMAGES` images, or a class with fewer than 2, are refused
(`TooFewImagesError`, one line) rather than given a threshold no held-out image supports.

Multi-label (not coded): the classes' features are pooled the same way, an image with no label is
an in-class image (the model was told "none of these classes" is a valid answer for it, so it is
not novel), and the bank (`knn`) takes every training image; `mahalanobis`, which needs one class
per image, would take the images' label sets as classes or fall back to one pooled mean.

NumPy and scikit-learn only; imports `transfer.core` and nothing else of the project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from transfer.core.errors import DataError

#: The scores, feature-space ones first.
METHODS = ("knn", "mahalanobis", "mahalanobis_l2", "max_softmax", "energy", "knn_class", "rmd", "rmd_l2",
           "knn_predicted", "knn_msp", "knn_msp_max")
FEATURE_METHODS = ("knn", "mahalanobis", "mahalanobis_l2", "knn_class", "rmd", "rmd_l2")
PROBABILITY_METHODS = ("max_softmax", "energy")
HYBRID_METHODS = ("knn_predicted", "knn_msp", "knn_msp_max")
#: Scores whose held-out computation needs fold classifiers (`logits_of`).
LOGIT_METHODS = PROBABILITY_METHODS + HYBRID_METHODS
KNN_METHODS = ("knn", "knn_class", "knn_predicted", "knn_msp", "knn_msp_max")
#: The combined scores: their components, standardised by their held-out in-class scores.
COMBINED_METHODS = {"knn_msp": ("knn", "max_softmax"), "knn_msp_max": ("knn", "max_softmax")}
#: The share of in-class images the threshold answers `unknown`.
DEFAULT_SHARE = 0.02
#: Fewest training images a threshold is fitted on (and 2 per class, so that each fold's others hold every class).
MIN_IMAGES = 20
MIN_PER_CLASS = 2
FOLDS = 5
#: Sun et al.'s k per training image (50 of 50,000; 1,000 of 1.28 million).
KNN_RATIO = 0.001


class TooFewImagesError(DataError):
    """The training images are too few to hold some out and set a threshold on them."""


def knn_k(images: int) -> int:
    """k of `knn` for a bank of `images`: one in a thousand as in Sun et al. 2022, at least 1."""
    return max(1, int(round(KNN_RATIO * images)))


def normalise(features: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (rows of zeros stay zeros)."""
    features = np.asarray(features, np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


def knn_scores(bank: np.ndarray, features: np.ndarray, k: int) -> np.ndarray:
    """The Euclidean distance from each normalised row of `features` to its k-th nearest row of
    `bank` (rows already normalised, as `normalise` gives)."""
    queries = normalise(features)
    # |q - b|^2 = 2 - 2 q.b for unit vectors; kept from going below 0 by rounding
    squared = np.maximum(2.0 - 2.0 * queries @ np.asarray(bank, np.float64).T, 0.0)
    squared[np.linalg.norm(queries, axis=1) == 0] = 1.0  # a zero feature lies at distance 1 from every unit row
    return np.sqrt(np.partition(squared, k - 1, axis=1)[:, k - 1])


def mahalanobis_statistics(features: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """`{"means": [classes, D], "precision": [D, D]}`: the class means and the inverse of the
    Ledoit-Wolf shrunk covariance of the features less their class mean."""
    from sklearn.covariance import LedoitWolf

    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    covariance = LedoitWolf(store_precision=False, assume_centered=True).fit(centred).covariance_
    return {"means": means, "precision": np.linalg.inv(covariance)}


def mahalanobis_scores(means: np.ndarray, precision: np.ndarray, features: np.ndarray) -> np.ndarray:
    """min over classes c of (x - mean_c)^T precision (x - mean_c), per row x of `features`."""
    features = np.asarray(features, np.float64)
    # (x - m)^T P (x - m) = x.Px - 2 x.Pm + m.Pm, for every class at once
    projected = features @ precision
    distances = (np.einsum("nd,nd->n", projected, features)[:, None] - 2.0 * projected @ means.T
                 + np.einsum("cd,cd->c", means @ precision, means)[None, :])
    return distances.min(axis=1)


def knn_class_scores(bank: np.ndarray, bank_labels: np.ndarray, features: np.ndarray, k: int,
                     predicted: np.ndarray | None = None) -> np.ndarray:
    """Per normalised row of `features`, the distance to the k-th nearest `bank` row of each class
    (`bank_labels`): the smallest over the classes, or, given `predicted` (a class per row), that
    class's."""
    queries = normalise(features)
    bank, bank_labels = np.asarray(bank, np.float64), np.asarray(bank_labels)
    squared = np.maximum(2.0 - 2.0 * queries @ bank.T, 0.0)
    squared[np.linalg.norm(queries, axis=1) == 0] = 1.0
    classes = np.unique(bank_labels)
    per_class = np.stack([np.sort(squared[:, bank_labels == c], axis=1)[:, min(k, int((bank_labels == c).sum())) - 1]
                          for c in classes], axis=1)
    if predicted is None:
        return np.sqrt(per_class.min(axis=1))
    return np.sqrt(per_class[np.arange(len(queries)), np.searchsorted(classes, np.asarray(predicted))])


def relative_mahalanobis_statistics(features: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """`mahalanobis_statistics` and all `features`' mean and inverse Ledoit-Wolf covariance (`background_*`)."""
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, np.float64)
    background = features.mean(axis=0, keepdims=True)
    covariance = LedoitWolf(store_precision=False, assume_centered=True).fit(features - background).covariance_
    return {**mahalanobis_statistics(features, labels), "background_mean": background,
            "background_precision": np.linalg.inv(covariance)}


def relative_mahalanobis_scores(state: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """min over classes of the class Mahalanobis distance less the background's (Ren et al. 2021)."""
    return (mahalanobis_scores(state["means"], state["precision"], features)
            - mahalanobis_scores(state["background_mean"], state["background_precision"], features))


def logits_from_decision(decision: np.ndarray) -> np.ndarray:
    """`[N, classes]` logits of a scikit-learn linear classifier's `decision_function`: as given for
    several classes; for two (one column z), `[0, z]`, since softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]."""
    decision = np.asarray(decision, np.float64)
    return np.stack([np.zeros_like(decision), decision], axis=1) if decision.ndim == 1 else decision


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def max_softmax_scores(probabilities: np.ndarray) -> np.ndarray:
    """1 - max_c p_c per row (Hendrycks & Gimpel 2017)."""
    return 1.0 - np.asarray(probabilities, np.float64).max(axis=1)


def energy_scores(logits: np.ndarray) -> np.ndarray:
    """The free energy -log sum_c exp(logit_c) per row (Liu et al. 2020, T = 1): high off the classes."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1)
    return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))


@dataclass
class NoveltyDetector:
    """A fitted novelty score and its threshold: `score(...) > threshold` is `unknown`.

    Attributes:
        method: one of `METHODS`.
        threshold: the (1 - share) quantile of the training images' out-of-fold scores.
        share: the share of in-class images the threshold was set to answer `unknown`.
        state: plain arrays: `bank` (normalised training features; `knn*`), `bank_labels` (`knn_class`,
            `knn_predicted`), `centre` and `scale` (`knn_msp*`), `means` and `precision` (`mahalanobis*`,
            `rmd*`), `background_mean` and `background_precision` (`rmd*`); none for probability scores.
        k: the neighbour the `KNN_METHODS` measure to (0 for the other methods).
        held_out_scores: the out-of-fold scores the threshold came from (for a report's histogram).
    """

    method: str
    threshold: float
    share: float
    state: dict[str, np.ndarray] = field(default_factory=dict)
    k: int = 0
    held_out_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def score(self, features: np.ndarray | None = None, *, probabilities: np.ndarray | None = None,
              logits: np.ndarray | None = None) -> np.ndarray:
        """Novelty scores of `features` (pooled backbone features, for `knn` and `mahalanobis`) or
        of a classifier's `logits` (`energy`) or `probabilities` (`max_softmax`; or from the logits)."""
        return method_scores(self.method, self.state, features, probabilities=probabilities, logits=logits, k=self.k)

    def is_unknown(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def to_dict(self) -> dict:
        """Everything but the arrays (`state`, `held_out_scores`), JSON-ready."""
        return {"method": self.method, "threshold": float(self.threshold), "share": float(self.share), "k": int(self.k)}

    @classmethod
    def from_dict(cls, values: dict, state: dict[str, np.ndarray] | None = None,
                  held_out_scores: np.ndarray | None = None) -> "NoveltyDetector":
        if values.get("method") not in METHODS:
            raise ValueError(f"Unknown novelty method {values.get('method')!r}; expected one of {', '.join(METHODS)}.")
        return cls(values["method"], float(values["threshold"]), float(values["share"]), dict(state or {}),
                   int(values.get("k", 0)), np.zeros(0) if held_out_scores is None else np.asarray(held_out_scores))

    def save(self, path: Path) -> None:
        """One `.npz`: the arrays, and `to_dict()` as JSON under `detector`."""
        arrays = {f"state_{name}": value for name, value in self.state.items()}
        np.savez(path, detector=np.array(json.dumps(self.to_dict())), held_out_scores=self.held_out_scores, **arrays)

    @classmethod
    def load(cls, path: Path) -> "NoveltyDetector":
        with np.load(path, allow_pickle=False) as stored:
            state = {name[len("state_"):]: stored[name] for name in stored.files if name.startswith("state_")}
            return cls.from_dict(json.loads(str(stored["detector"])), state, stored["held_out_scores"])


def method_scores(method: str, state: dict, features=None, *, probabilities=None, logits=None, k: int = 1) -> np.ndarray:
    """The novelty scores of `method` with its fitted `state` (see `NoveltyDetector.score`)."""
    if method == "knn":
        return knn_scores(state["bank"], _required(features, "features", method), k)
    if method == "mahalanobis":
        return mahalanobis_scores(state["means"], state["precision"], _required(features, "features", method))
    if method == "mahalanobis_l2":
        return mahalanobis_scores(state["means"], state["precision"], normalise(_required(features, "features", method)))
    if method == "knn_class":
        return knn_class_scores(state["bank"], state["bank_labels"], _required(features, "features", method), k)
    if method == "knn_predicted":
        outputs = probabilities if probabilities is not None else _required(logits, "logits", method)
        predicted = np.asarray(outputs).argmax(axis=1)  # the same class from logits or probabilities
        return knn_class_scores(state["bank"], state["bank_labels"], _required(features, "features", method), k,
                                np.unique(state["bank_labels"])[predicted])
    if method == "rmd":
        return relative_mahalanobis_scores(state, _required(features, "features", method))
    if method == "rmd_l2":
        return relative_mahalanobis_scores(state, normalise(_required(features, "features", method)))
    if method in COMBINED_METHODS:
        parts = np.stack([method_scores(part, state, features, probabilities=probabilities, logits=logits, k=k)
                          for part in COMBINED_METHODS[method]], axis=1)
        return combine(method, parts, state["centre"], state["scale"])
    if method == "energy":
        return energy_scores(_required(logits, "logits", method))
    if method == "max_softmax":
        return max_softmax_scores(probabilities if probabilities is not None else softmax(_required(logits, "logits", method)))
    raise ValueError(f"Unknown novelty method {method!r}; expected one of {', '.join(METHODS)}.")


def _required(value, name: str, method: str):
    if value is None:
        raise ValueError(f"The {method} novelty score needs {name}; none were given.")
    return value


def combine(method: str, parts: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`[N, parts]` scores standardised by `centre` and `scale`: summed, or their maximum (`knn_msp_max`)."""
    standard = (np.asarray(parts, np.float64) - centre) / scale
    return standard.max(axis=1) if method == "knn_msp_max" else standard.sum(axis=1)


def fit_state(method: str, features: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """What `method` keeps of its training images: the normalised bank (and labels), class statistics,
    or nothing (`knn_msp`'s `centre` and `scale` come from held-out scores, in `fit_threshold`)."""
    if method in ("knn", *COMBINED_METHODS):
        return {"bank": normalise(features)}
    if method in ("knn_class", "knn_predicted"):
        return {"bank": normalise(features), "bank_labels": np.asarray(labels)}
    if method == "rmd":
        return relative_mahalanobis_statistics(features, labels)
    if method == "rmd_l2":
        return relative_mahalanobis_statistics(normalise(features), labels)
    if method == "mahalanobis":
        return mahalanobis_statistics(features, labels)
    if method == "mahalanobis_l2":
        return mahalanobis_statistics(normalise(features), labels)
    return {}


def threshold_at(scores: np.ndarray, share: float = DEFAULT_SHARE) -> float:
    """The (1 - share) quantile of in-class `scores` (linear interpolation): about `share` of them lie above it."""
    return float(np.quantile(np.asarray(scores, np.float64), 1.0 - share))


def check_enough(labels: np.ndarray, share: float = DEFAULT_SHARE) -> int:
    """The folds a threshold is fitted on (up to `FOLDS`, as many as the smallest class allows).

    Raises:
        TooFewImagesError: fewer than `MIN_IMAGES` images or a class with fewer than `MIN_PER_CLASS`.
        ValueError: `share` outside (0, 0.5).
    """
    if not 0.0 < share < 0.5:
        raise ValueError(f"The unknown share is {share!r}; expected a fraction above 0 and below 0.5, such as 0.02.")
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    smallest = int(counts.min()) if len(counts) else 0
    if len(labels) < MIN_IMAGES or smallest < MIN_PER_CLASS:
        raise TooFewImagesError(
            f"The novelty threshold needs at least {MIN_IMAGES} training images with {MIN_PER_CLASS} or more per class "
            f"to hold some out (received {len(labels)} images, the smallest class {smallest}); the detector is "
            f"skipped: add images to use it."
        )
    return min(FOLDS, smallest)


def out_of_fold_scores(method: str, features: np.ndarray, labels: np.ndarray, *, folds: int, seed: int = 0,
                       logits_of: Callable | None = None, k: int = 1) -> np.ndarray:
    """Each training image's score against a bank, statistics or classifier fitted on the other
    `folds` - 1 stratified folds; `logits_of(fit_features, fit_labels, score_features)` gives a
    fold classifier's logits for the probability scores."""
    from sklearn.model_selection import StratifiedKFold

    if method in COMBINED_METHODS:
        parts = np.stack([out_of_fold_scores(part, features, labels, folds=folds, seed=seed, logits_of=logits_of, k=k)
                          for part in COMBINED_METHODS[method]], axis=1)
        return combine(method, parts, *standardisation(parts))
    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    scores = np.zeros(len(labels))
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        logits = None
        if method in LOGIT_METHODS:
            logits = _required(logits_of, "a fold classifier (logits_of)", method)(features[fit], labels[fit], features[held])
        state = fit_state(method, features[fit], labels[fit])
        scores[held] = method_scores(method, state, features[held], logits=logits, k=k)
    return scores


def standardisation(parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(centre, scale)`: each column's mean and standard deviation (0 taken as 1)."""
    parts = np.asarray(parts, np.float64)
    scale = parts.std(axis=0)
    return parts.mean(axis=0), np.where(scale > 0, scale, 1.0)


def fit_threshold(method: str, features: np.ndarray, labels: np.ndarray, *, share: float = DEFAULT_SHARE,
                  seed: int = 0, logits_of: Callable | None = None, k: int | None = None) -> NoveltyDetector:
    """A `NoveltyDetector` whose threshold answers `unknown` for about `share` of held-out in-class
    images (`out_of_fold_scores`), its state fitted on all of `features` (pooled training features,
    `[N, D]`) and `labels` (`[N]` class indices). `logits_of` is needed by the scores of `LOGIT_METHODS`
    only; `k` (the neighbour of `KNN_METHODS`) is by default `knn_k` of a fold's bank.

    Raises:
        TooFewImagesError: too few images to hold some out (`check_enough`).
    """
    folds = check_enough(labels, share)
    if method not in METHODS:
        raise ValueError(f"Unknown novelty method {method!r}; expected one of {', '.join(METHODS)}.")
    if method not in KNN_METHODS:
        k = 0
    elif k is None:  # a fold's bank holds (folds - 1) / folds of the images: k from that size, kept for the whole bank
        k = knn_k(len(labels) * (folds - 1) // folds)
    elif k < 1:
        raise ValueError(f"k is {k!r}; expected a neighbour count of 1 or more.")
    state = fit_state(method, features, labels)
    if method in COMBINED_METHODS:
        parts = np.stack([out_of_fold_scores(part, features, labels, folds=folds, seed=seed, logits_of=logits_of, k=max(k, 1))
                          for part in COMBINED_METHODS[method]], axis=1)
        state["centre"], state["scale"] = standardisation(parts)
        held_out = combine(method, parts, state["centre"], state["scale"])
    else:
        held_out = out_of_fold_scores(method, features, labels, folds=folds, seed=seed, logits_of=logits_of, k=max(k, 1))
    return NoveltyDetector(method, threshold_at(held_out, share), share, state, k, held_out)


def auroc(in_class: np.ndarray, novel: np.ndarray) -> float:
    """The area under the ROC curve of telling `novel` scores (positives) from `in_class` ones:
    1 separates perfectly, 0.5 is chance."""
    from sklearn.metrics import roc_auc_score

    truth = np.concatenate([np.zeros(len(in_class)), np.ones(len(novel))])
    return float(roc_auc_score(truth, np.concatenate([in_class, novel])))


def separation(in_class: np.ndarray, novel: np.ndarray, threshold: float) -> dict[str, float]:
    """`auroc`, `out_unknown` (the share of `novel` answered unknown at `threshold`) and
    `in_unknown` (the share of `in_class` test images wrongly answered unknown)."""
    return {"auroc": auroc(in_class, novel), "out_unknown": float(np.mean(np.asarray(novel) > threshold)),
            "in_unknown": float(np.mean(np.asarray(in_class) > threshold))}
