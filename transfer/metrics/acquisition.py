"""Which unlabelled images to label next (active learning on a small budget), and why each was chosen.

Strategies, given pooled features of the unlabelled pool and of what is labelled so far:

- `random`: a random order, the baseline every other must beat.
- `typiclust` (Hacohen, Dekel and Weinshall, "Active Learning on a Budget", ICML 2022): k-means of
  the L2-normalized features of pool and labelled together into |labelled| + n clusters (at most 500);
  each pick is from the largest of the clusters with fewest labelled images (clusters under 5 images
  left aside while others remain), the most typical unlabelled image in it: the highest inverse mean
  distance to its K = 20 nearest neighbours in the cluster. Representative, not uncertain: what wins
  with few labels.
- `margin` (Scheffer et al. 2001): the smallest gap between the top two probabilities of a logistic
  head fitted on what is labelled (`_head`: the tool's head at a fixed C); a random order until two
  classes are labelled.
- `auto`, the tool's own: `typiclust` while labels are few: fewer than two classes, or fewer than
  `AUTO_PER_CLASS` per class (of all the classes where known, else of those seen plus one) and under
  `AUTO_SHARE` of all the images; then uncertain and not redundant: the `AUTO_CANDIDATES` x n least
  certain images by margin, clustered by k-means into n groups, the least certain of each group.
  Chosen by measurement (`benchmarks/labelling.py`, docs/training.md): on frozen Lite0 features of
  flowers and hymenoptera, TypiClust beat margin and random up to 50 labels and more (10 per class),
  and fell below random once it had labelled 40% of a small pool (its clusters down to 2 or 3 images).

NumPy and scikit-learn only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

STRATEGIES = ("auto", "typiclust", "margin", "random")
#: TypiClust's constants (the paper's code): neighbours of typicality, smallest cluster, most clusters.
NEIGHBOURS, MIN_CLUSTER, MAX_CLUSTERS = 20, 5, 500
#: `auto` stays representative until this many labels per class, or this share of all the images labelled.
AUTO_PER_CLASS, AUTO_SHARE = 20, 0.25
#: `auto`'s uncertain phase picks n of the `AUTO_CANDIDATES` x n least certain images, one per k-means group.
AUTO_CANDIDATES = 4
#: The inverse regularization of the head that ranks by margin and suggests: the tool's own C where
#: cross-validation is impossible (`transfer.metrics.logistic.logistic_regression`).
HEAD_C = 1.0


@dataclass(frozen=True)
class Pick:
    """One image to label next: `index` into the pool, how it was chosen (`representative`,
    `uncertain`, `random`), why in words, and the head's suggestion (`suggested` class index and its
    probability; `None` while fewer than two classes are labelled)."""

    index: int
    kind: str
    reason: str
    suggested: int | None = None
    confidence: float | None = None


def next_to_label(pool: np.ndarray, labelled: np.ndarray, labels: np.ndarray, n: int, *, strategy: str = "auto",
                  classes: Sequence[str] | None = None, seed: int = 0, suggest: bool = True) -> list[Pick]:
    """The `n` pool images (`[N, D]` features) to label next, in order, given the `labelled` features
    (`[M, D]`, M may be 0) and their class indices `labels`. `classes`: the names of all the classes,
    where known (their number is `auto`'s switch; the names are said in the reasons). `suggest`: each
    pick carries the head's suggestion (a logistic fit, also where the strategy needs none).

    Raises:
        ValueError: an unknown strategy, or features of different widths.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    pool, labelled, labels = np.asarray(pool, dtype=np.float64), np.asarray(labelled, dtype=np.float64), np.asarray(labels, dtype=int)
    if len(labelled) == 0 and pool.ndim == 2:
        labelled = labelled.reshape(0, pool.shape[1])
    if pool.ndim != 2 or labelled.ndim != 2 or labelled.shape[1] != pool.shape[1]:
        raise ValueError(f"pool features {pool.shape} and labelled features {labelled.shape}: expected [N, D] and [M, D]")
    if len(labelled) != len(labels):
        raise ValueError(f"{len(labelled)} labelled feature rows but {len(labels)} labels; expected one label per row")
    n = int(min(n, len(pool)))
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    head = _head(labelled, labels) if suggest or strategy in ("margin", "auto") else None
    probabilities = head(pool) if head is not None else None
    if strategy == "random" or (strategy == "margin" and head is None):
        why = "random" if strategy == "random" else "random: margin needs two classes labelled"
        picks = [(int(i), "random", why) for i in rng.permutation(len(pool))[:n]]
    elif strategy == "typiclust" or (strategy == "auto" and _few_labels(labels, None if classes is None else len(classes), len(pool) + len(labels))):
        picks = typiclust(pool, labelled, n, seed=seed)
    elif strategy == "margin":
        picks = [(int(i), "uncertain", "") for i in np.argsort(margins(probabilities), kind="stable")[:n]]
    else:
        picks = _diverse_uncertain(pool, probabilities, n, seed)
    return [_with_suggestion(index, kind, why, probabilities, head, classes) for index, kind, why in picks]


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row (1 for a single class)."""
    if probabilities.shape[1] < 2:
        return np.ones(len(probabilities))
    top = np.sort(probabilities, axis=1)
    return top[:, -1] - top[:, -2]


def typicality(features: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """1 / (mean Euclidean distance to the `neighbours` nearest other rows), per row; rows alone get 0."""
    k = min(neighbours, len(features) - 1)
    if k < 1:
        return np.zeros(len(features))
    squared = np.sum(features**2, axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * features @ features.T, 0.0))
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, :k]
    return 1.0 / (nearest.mean(axis=1) + 1e-8)


def typiclust(pool: np.ndarray, labelled: np.ndarray, n: int, *, seed: int = 0) -> list[tuple[int, str, str]]:
    """TypiClust's `n` picks as `(pool index, "representative", reason)` (see the module's docstring)."""
    from sklearn.cluster import KMeans

    everything = _normalized(np.vstack([pool, labelled]))
    clusters = int(min(len(labelled) + n, MAX_CLUSTERS, len(everything)))
    assignment = KMeans(clusters, n_init=1, random_state=seed % 2**32).fit_predict(everything)
    in_pool, covered = assignment[: len(pool)], np.bincount(assignment[len(pool):], minlength=clusters)
    sizes, taken, picks = np.bincount(assignment, minlength=clusters), np.zeros(len(pool), bool), []
    for _ in range(n):
        open_ = np.array([np.any((in_pool == c) & ~taken) for c in range(clusters)])
        usable = open_ & (sizes >= MIN_CLUSTER) if np.any(open_ & (sizes >= MIN_CLUSTER)) else open_
        candidates = np.flatnonzero(usable)
        cluster = candidates[np.lexsort((-sizes[candidates], covered[candidates]))[0]]
        members = np.flatnonzero(assignment == cluster)
        scores = typicality(everything[members])
        free = members < len(pool)
        free[free] = ~taken[members[free]]
        best = int(members[free][np.argmax(scores[free])])
        labelled_there = f", {covered[cluster]} labelled" if covered[cluster] else ""
        picks.append((best, "representative", f"representative: centre of a cluster of {sizes[cluster]}{labelled_there}"
                      if covered[cluster] else f"representative: centre of an unlabelled cluster of {sizes[cluster]}"))
        taken[best], covered[cluster] = True, covered[cluster] + 1
    return picks


def _few_labels(labels: np.ndarray, num_classes: int | None, images: int) -> bool:
    """`auto` is still representative: fewer than two classes, or fewer than `AUTO_PER_CLASS` labels
    per class (of `num_classes`, else of the classes seen plus one not yet seen) and fewer than
    `AUTO_SHARE` of the `images` labelled."""
    seen = len(np.unique(labels))
    classes = num_classes if num_classes is not None else seen + 1
    return seen < 2 or (len(labels) < AUTO_PER_CLASS * max(classes, seen) and len(labels) < AUTO_SHARE * images)


def _diverse_uncertain(pool: np.ndarray, probabilities: np.ndarray, n: int, seed: int) -> list[tuple[int, str, str]]:
    """`auto` with labels enough: the least certain of each of n k-means groups of the `AUTO_CANDIDATES` x n
    least certain images, least certain first."""
    from sklearn.cluster import KMeans

    gaps = margins(probabilities)
    candidates = np.argsort(gaps, kind="stable")[: min(len(pool), AUTO_CANDIDATES * n)]
    if n == 1 or len(candidates) <= n:
        chosen = candidates[:n]
    else:
        groups = KMeans(n, n_init=1, random_state=seed % 2**32).fit_predict(_normalized(pool[candidates]))
        chosen = np.array([candidates[groups == g][0] for g in np.unique(groups)])  # candidates are least certain first
        rest = [i for i in candidates if i not in set(chosen)]
        chosen = np.concatenate([chosen, rest])[:n]
    chosen = chosen[np.argsort(gaps[chosen], kind="stable")]
    return [(int(i), "uncertain", "") for i in chosen]


def _head(labelled: np.ndarray, labels: np.ndarray):
    """`features -> [N, all classes] probabilities` of a logistic head fitted on what is labelled
    (zero for classes never labelled), or `None` while fewer than two classes are: the tool's head
    (standardized features, multinomial logistic regression) with C = `HEAD_C`, not chosen by
    cross-validation, which costs some 7 s at 100 labels of 1,280 features on 2 cores: too slow to
    refit after every few labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    seen = np.unique(labels)
    if len(seen) < 2:
        return None
    regression = make_pipeline(StandardScaler(), LogisticRegression(C=HEAD_C, max_iter=5000))
    regression.fit(labelled, np.searchsorted(seen, labels))
    width = int(seen.max()) + 1

    def probabilities(features: np.ndarray) -> np.ndarray:
        found = np.zeros((len(features), width))
        found[:, seen] = regression.predict_proba(features)
        return found

    return probabilities


def _with_suggestion(index: int, kind: str, why: str, probabilities, head, names) -> Pick:
    """A `Pick` with the head's suggestion and, for an uncertain pick, its reason in words."""
    if head is None:
        return Pick(index, kind, why)
    row = probabilities[index]
    first, second = np.argsort(row)[::-1][:2]

    def name(c):
        return names[c] if names is not None and c < len(names) else str(c)

    if kind == "uncertain":
        why = f"uncertain: margin {row[first] - row[second]:.2f} between {name(first)} and {name(second)}"
    return Pick(index, kind, why, int(first), float(row[first]))


def _normalized(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (TypiClust's convention for its embeddings)."""
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
