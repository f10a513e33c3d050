"""A simulated labeller (issue 35): which order of labelling reaches a good head with fewest labels.

    nice -n 5 .venv/bin/python benchmarks/labelling.py --seeds 5 --batch 10 --auto-candidates 1

Backbone: EfficientNet-Lite0 (ImageNet, `../shared/data/efficientnet_lite0/efficientnet_lite0_notop.keras`),
frozen, its globally pooled features at 224 px through the tool's own path
(`transfer.training.features.model_feature_extractor` and `extract_features`, cached by `FeatureCache`
under `--cache`, by default the shared `/work/cache/features`).

Setups:
- flowers: the pool is 1,000 photos of `/work/data/flowers/dataset/train` (3,115 photos, 5 classes),
  drawn once with seed 0 for speed; the test set is 500 photos of `flowers/val`, drawn once with seed 0.
- hymenoptera: the pool is `hymenoptera/train` (the `imageNotFound.gif` placeholder left out, and said),
  the test set is `hymenoptera/val` (153).

For each strategy of `transfer.metrics.acquisition` and each seed, the true labels of the pool are
revealed in the strategy's order, `--batch` at a time (1 by default; docs/training.md's table: 10): after each reveal the strategy chooses again
from what is labelled so far. At each budget (10, 20, 30, 40, 50, 100 labels) the tool's head
(`transfer.metrics.logistic.logistic_regression`: standardized features, multinomial logistic
regression, C by cross-validation of the log loss) is fitted on what is labelled and scored on the test
photos, which chose nothing. A budget where one class has no label yet still fits (on the classes seen).
The seed drives the random order, k-means' starts and the logistic fit; mean +- sd over the seeds.
Also printed: for `auto`, the smallest budget whose mean accuracy reaches random's mean at 50 labels.
`--auto-candidates K` adds a row of `auto` with K candidates a pick in its uncertain phase (1: plain margin).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread: k-means and the
    os.environ.setdefault(_threads, "1")  # logistic fits ran up to 10x slower with 2 threads on a busy 2-core machine
from common import HYMENOPTERA, LITE0, machine, mean_sd  # noqa: E402

FLOWERS = Path("/work/data/flowers/dataset")
FLOWERS_POOL, FLOWERS_TEST = 1000, 500
BUDGETS = (10, 20, 30, 40, 50, 100)


def photos(folder: Path, count: int | None, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    """`(paths, labels, classes)` of `folder/CLASS/*` JPEG or PNG photos: `count` of them drawn with
    `seed` across classes (a permutation of the sorted list), or all of them."""
    paths, labels, classes = [], [], sorted(p.name for p in folder.iterdir() if p.is_dir())
    for index, name in enumerate(classes):
        files = sorted(str(p) for p in (folder / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for other in sorted(set(map(str, (folder / name).iterdir())) - set(files)):
            print(f"left out {other}: not a JPEG or PNG photo")  # hymenoptera's imageNotFound.gif placeholder
        paths += files
        labels += [index] * len(files)
    if count is not None:
        chosen = np.sort(np.random.default_rng(seed).permutation(len(paths))[:count])
        paths, labels = [paths[i] for i in chosen], [labels[i] for i in chosen]
    return paths, np.array(labels), classes


def features_of(paths: list[str], cache_root: Path, name: str) -> np.ndarray:
    """Pooled EfficientNet-Lite0 features of `paths`, by the tool's extractor and cache."""
    from transfer.training.features import FeatureCache, extract_features, model_feature_extractor

    global _EXTRACTOR
    if _EXTRACTOR is None:
        _EXTRACTOR = model_feature_extractor(LITE0)
    extractor, size = _EXTRACTOR
    started = time.perf_counter()
    found = extract_features(extractor, paths, 32, cache=FeatureCache(cache_root, extractor, size)).astype(np.float64)
    print(f"features of {name}: {found.shape} in {time.perf_counter() - started:.0f} s", flush=True)
    return found


_EXTRACTOR = None


def setups(cache_root: Path) -> dict[str, tuple]:
    """`{name: (pool features, pool labels, test features, test labels, classes)}`."""
    pool, pool_labels, classes = photos(FLOWERS / "train", FLOWERS_POOL)
    test, test_labels, _ = photos(FLOWERS / "val", FLOWERS_TEST)
    found = {"flowers": (features_of(pool, cache_root, "flowers pool"), pool_labels,
                         features_of(test, cache_root, "flowers test"), test_labels, classes)}
    pool, pool_labels, classes = photos(HYMENOPTERA / "train", None)
    test, test_labels, _ = photos(HYMENOPTERA / "val", None)
    found["hymenoptera"] = (features_of(pool, cache_root, "hymenoptera pool"), pool_labels,
                            features_of(test, cache_root, "hymenoptera test"), test_labels, classes)
    return found


def simulate(pool, pool_labels, test, test_labels, strategy: str, seed: int, batch: int, num_classes: int) -> dict[int, float]:
    """`{budget: test accuracy}` after revealing the pool's labels in `strategy`'s order, `batch` at a time."""
    from transfer.metrics.acquisition import next_to_label

    labelled, scores = [], {}
    while len(labelled) < max(BUDGETS):
        unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
        step = min(batch, min(b for b in BUDGETS if b > len(labelled)) - len(labelled))
        picks = next_to_label(pool[unlabelled], pool[labelled], pool_labels[labelled], step, strategy=strategy,
                              classes=[str(c) for c in range(num_classes)], seed=seed * 1000 + len(labelled), suggest=False)
        labelled += [int(unlabelled[p.index]) for p in picks]
        if len(labelled) in BUDGETS:
            scores[len(labelled)] = accuracy(pool[labelled], pool_labels[labelled], test, test_labels, seed)
    return scores


def accuracy(features, labels, test, test_labels, seed: int) -> float:
    """Test accuracy of the tool's logistic head fitted on `features` (on the classes seen; a single class
    seen predicts it everywhere)."""
    from transfer.metrics.logistic import logistic_regression

    seen = np.unique(labels)
    if len(seen) < 2:
        return float(np.mean(test_labels == seen[0]))
    regression, _, _ = logistic_regression(features, np.searchsorted(seen, labels), len(seen), seed=seed)
    return float(np.mean(seen[regression.predict(test)] == test_labels))


def main() -> None:
    from transfer.metrics import acquisition
    from transfer.metrics.acquisition import STRATEGIES

    default_candidates = acquisition.AUTO_CANDIDATES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="labels revealed between two choices")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--setups", default="flowers,hymenoptera")
    parser.add_argument("--auto-candidates", default="", help="extra rows: auto with these candidates a pick (1: plain margin)")
    parser.add_argument("--cache", type=Path, default=Path("/work/cache/features"))
    args = parser.parse_args()
    print(f"machine: {machine()}; batch {args.batch}, seeds 0..{args.seeds - 1}", flush=True)
    for name, (pool, pool_labels, test, test_labels, classes) in setups(args.cache).items():
        if name not in args.setups.split(","):
            continue
        print(f"\n{name}: pool {len(pool)} ({np.bincount(pool_labels).tolist()} per class), test {len(test)}\n")
        print("| strategy | " + " | ".join(f"{b} labels" for b in BUDGETS) + " |")
        print("|---|" + "---|" * len(BUDGETS))
        means = {}
        rows = [(s, None) for s in args.strategies.split(",")]
        rows += [(f"auto, {k} candidates a pick", int(k)) for k in args.auto_candidates.split(",") if k]
        for strategy, candidates in rows:
            started = time.perf_counter()
            acquisition.AUTO_CANDIDATES = candidates or default_candidates
            runs = [simulate(pool, pool_labels, test, test_labels, strategy.split(",")[0], seed, args.batch, len(classes))
                    for seed in range(args.seeds)]
            means[strategy] = {b: float(np.mean([r[b] for r in runs])) for b in BUDGETS}
            cells = " | ".join(mean_sd([r[b] for r in runs]) for b in BUDGETS)
            print(f"| {strategy} | {cells} | ({time.perf_counter() - started:.0f} s)", flush=True)
        if "auto" in means and "random" in means:
            target = means["random"][50]
            reached = [b for b in BUDGETS if means["auto"][b] >= target]
            print(f"\nauto reaches random's mean at 50 labels ({target:.3f}) at: "
                  f"{reached[0] if reached else 'none of the budgets'} labels")


if __name__ == "__main__":
    main()
