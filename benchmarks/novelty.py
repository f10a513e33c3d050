"""Open-set detection ("none of these") on real photos: which novelty score tells a model's own
classes from photos of something else, blank images and noise (issue 34).

    nice -n 5 .venv/bin/python benchmarks/novelty.py --seeds 3 --out /tmp/novelty --cache /work/cache/features

Backbone: EfficientNet-Lite0 (ImageNet, `../shared/data/efficientnet_lite0/efficientnet_lite0_notop.keras`),
frozen, its globally pooled features at 224 px through the tool's own path
(`transfer.training.features.model_feature_extractor` and `extract_features`, cached by
`FeatureCache` under `--cache`, by default OUT/cache, so a rerun skips the backbone).

Setups (the seed redraws the training images; the test and far-away sets stay the same):
- flowers: trained on `--per-class` (40) photos per class of `/work/data/flowers/dataset/train`
  (5 classes; drawn from a fixed pool of 80 per class); its own test photos are 30 per class of
  `flowers/val` (150); far away: all of hymenoptera (train + val; the ants, 193, and the bees, 204,
  as two sets: bees are mostly photographed on flowers),
  50 blank images (one uniform random colour each) and 50 noise images (uniform random pixels).
- hymenoptera: trained on 90 photos per class of `hymenoptera/train` (of 123 ants, 121 bees, the
  `imageNotFound.gif` placeholder left out, and said); its own
  test photos are `hymenoptera/val` (153); far away: the 150 flowers/val test photos, blank, noise.

The classifier is the tool's default head: `transfer.metrics.logistic.logistic_regression` (standardized
features, multinomial logistic regression, C by 5-fold CV of the log loss). Each detector's
threshold comes from `transfer.metrics.novelty.fit_threshold`: 5-fold out-of-fold scores of the
training photos (each fold scored against the other folds' bank, statistics or classifier; for the
two probability scores the fold classifiers reuse the C chosen on all the training photos), set to
reject 2% of them. The test and far-away photos choose nothing. Reported per detector and far set:
AUROC (own test photos vs that set), the share of the set answered unknown at the threshold, and
the share of the own test photos wrongly answered unknown; mean +- sd over the seeds. Then the
trade-off: the same detectors with thresholds rejecting 1%, 2% and 5% of the held-out scores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from common import HYMENOPTERA, LITE0, machine, mean_sd  # noqa: E402

FLOWERS = Path("/work/data/flowers/dataset")
POOL_PER_CLASS, TEST_PER_CLASS, HYMENOPTERA_PER_CLASS, SYNTHETIC = 80, 30, 90, 50


def photos(folder: Path, per_class: int | None, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    """`(paths, labels, classes)` of `folder/CLASS/*`: `per_class` of each class drawn with `seed`
    (sorted names, then a permutation), or all of them."""
    rng = np.random.default_rng(seed)
    paths, labels, classes = [], [], sorted(p.name for p in folder.iterdir() if p.is_dir())
    for index, name in enumerate(classes):
        files = sorted(str(p) for p in (folder / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for other in sorted(set(map(str, (folder / name).iterdir())) - set(files)):
            print(f"left out {other}: not a JPEG or PNG photo")  # hymenoptera's imageNotFound.gif placeholder
        if per_class is not None:
            files = [files[i] for i in rng.permutation(len(files))[:per_class]]
        paths += files
        labels += [index] * len(files)
    return paths, np.array(labels), classes


def synthetic(folder: Path, kind: str, count: int, size: int = 224) -> list[str]:
    """`count` PNGs: `blank` (one uniform random colour each) or `noise` (uniform random pixels)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng({"blank": 1, "noise": 2}[kind])
    paths = []
    for index in range(count):
        if kind == "blank":
            pixels = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3))
        else:
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / f"{kind}_{index:03d}.png"
        if not path.exists():
            Image.fromarray(np.ascontiguousarray(pixels)).save(path)
        paths.append(str(path))
    return paths


def features_of(sets: dict[str, list[str]], cache_root: Path) -> dict[str, np.ndarray]:
    """Pooled EfficientNet-Lite0 features of each set's paths, by the tool's extractor and its
    `FeatureCache` under `cache_root` (keyed by extractor and image content: safe to share)."""
    from transfer.training.features import FeatureCache, extract_features, model_feature_extractor

    extractor, size = model_feature_extractor(LITE0)
    cache = FeatureCache(cache_root, extractor, size)
    found = {}
    for name, paths in sets.items():
        started = time.perf_counter()
        found[name] = extract_features(extractor, paths, 32, cache=cache).astype(np.float64)
        print(f"features of {name}: {found[name].shape} in {time.perf_counter() - started:.0f} s", flush=True)
    return found


#: The detectors measured: (name in the tables, method, k; None is `knn_k`'s one in a thousand).
DETECTORS = (
    ("knn k=1 (0.1% rule)", "knn", None), ("knn k=5", "knn", 5), ("knn k=10", "knn", 10), ("knn k=20", "knn", 20),
    ("knn_class k=5", "knn_class", 5), ("knn_class k=10", "knn_class", 10), ("knn_class k=20", "knn_class", 20),
    ("knn_predicted k=1", "knn_predicted", 1), ("knn_predicted k=5", "knn_predicted", 5),
    ("knn_predicted k=10", "knn_predicted", 10),
    ("mahalanobis", "mahalanobis", None), ("mahalanobis_l2", "mahalanobis_l2", None),
    ("rmd", "rmd", None), ("rmd_l2", "rmd_l2", None),
    ("max_softmax", "max_softmax", None), ("energy", "energy", None),
    ("knn_msp k=1 (sum of z)", "knn_msp", 1), ("knn_msp_max k=1 (max of z)", "knn_msp_max", 1),
    ("knn_msp k=10 (sum of z)", "knn_msp", 10), ("knn_msp_max k=10 (max of z)", "knn_msp_max", 10),
)
#: The in-class shares of the trade-off table: each threshold is the (1 - share) quantile of the same held-out scores.
TRADE_OFF = (0.01, 0.02, 0.05)


def evaluate_setup(train, train_labels, test, test_labels, far: dict[str, np.ndarray], seed: int, share: float) -> list[dict]:
    """One row per detector, far set and in-class share: AUROC, the far set's unknown share, the test's."""
    import hashlib

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from transfer.metrics.logistic import logistic_regression
    from transfer.metrics.novelty import fit_threshold, logits_from_decision, separation, threshold_at

    num_classes = int(train_labels.max()) + 1
    classifier, c, _ = logistic_regression(train, train_labels, num_classes, seed=seed)
    fold_classifiers = {}  # the same folds serve every logit-using detector: each fold's classifier fitted once

    def fold_logits(fit_x, fit_y, score_x):
        key = hashlib.sha256(fit_x.tobytes() + fit_y.tobytes()).hexdigest()
        if key not in fold_classifiers:
            fold_classifiers[key] = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(fit_x, fit_y)
        return logits_from_decision(fold_classifiers[key].decision_function(score_x))

    def logits(x):
        return logits_from_decision(classifier.decision_function(x))

    rows = []
    for name, method, k in DETECTORS:
        detector = fit_threshold(method, train, train_labels, share=share, seed=seed, logits_of=fold_logits, k=k)
        own = detector.score(test, logits=logits(test))
        scores = {far_name: detector.score(images, logits=logits(images)) for far_name, images in far.items()}
        for at in (share, *TRADE_OFF):
            threshold = detector.threshold if at == share else threshold_at(detector.held_out_scores, at)
            for far_name, novel in scores.items():
                rows.append({"detector": name, "far": far_name, "seed": seed, "share": at, "k": detector.k,
                             **separation(own, novel, threshold)})
    rows.append({"detector": "accuracy", "far": "-", "seed": seed, "auroc": float((classifier.predict(test) == test_labels).mean())})
    return rows


def table(rows: list[dict], title: str, share: float) -> str:
    """The markdown table of one setup at `share`: a row per detector, per far set AUROC and unknown
    share, then the own test photos' wrongly-unknown share (the same in every far set's row, since
    it depends on the detector alone)."""
    fars = list(dict.fromkeys(row["far"] for row in rows if row["detector"] != "accuracy"))
    header = ["detector", *[f"{far} AUROC | {far} unknown" for far in fars], "own test wrongly unknown"]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * (2 * len(fars) + 2)]
    for name, _, _ in DETECTORS:
        cells = [name]
        for far in fars:
            chosen = [r for r in rows if r["detector"] == name and r["far"] == far and r["share"] == share]
            cells += [mean_sd([r["auroc"] for r in chosen]), mean_sd([r["out_unknown"] for r in chosen])]
        chosen = [r for r in rows if r["detector"] == name and r["far"] == fars[0] and r["share"] == share]
        cells.append(mean_sd([r["in_unknown"] for r in chosen]))
        lines.append("| " + " | ".join(cells) + " |")
    accuracy = [r["auroc"] for r in rows if r["detector"] == "accuracy"]
    if accuracy:
        lines += ["", f"Classifier accuracy on its own test photos: {mean_sd(accuracy)}"]
    return "\n".join(lines)


def trade_off(rows: list[dict], title: str) -> str:
    """The trade-off of one setup: per detector and held-out in-class share (`TRADE_OFF`), each far
    set's unknown share and the own test photos' wrongly-unknown share."""
    fars = list(dict.fromkeys(row["far"] for row in rows if row["detector"] != "accuracy"))
    header = ["detector", "held-out share", *[f"{far} unknown" for far in fars], "own test wrongly unknown"]
    lines = [f"### {title}: trade-off", "", "| " + " | ".join(header) + " |", "|" + "---|" * (len(fars) + 3)]
    for name, _, _ in DETECTORS:
        for share in TRADE_OFF:
            chosen = {far: [r for r in rows if r["detector"] == name and r["far"] == far and r["share"] == share] for far in fars}
            cells = [name, f"{share:.0%}", *[mean_sd([r["out_unknown"] for r in chosen[far]], 2) for far in fars],
                     mean_sd([r["in_unknown"] for r in chosen[fars[0]]], 3)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=40, help="flowers training photos per class")
    parser.add_argument("--share", type=float, default=0.02, help="in-class share the threshold rejects")
    parser.add_argument("--out", type=Path, default=Path("/tmp/novelty"))
    parser.add_argument("--cache", type=Path, default=None, help="FeatureCache root (default OUT/cache); features are keyed "
                        "by extractor and image content, so a root shared with other runs is safe")
    args = parser.parse_args()

    flower_pool, flower_pool_labels, _ = photos(FLOWERS / "train", POOL_PER_CLASS)
    flower_test, flower_test_labels, _ = photos(FLOWERS / "val", TEST_PER_CLASS)
    ants_train, ants_train_labels, _ = photos(HYMENOPTERA / "train", None)
    ants_val, ants_val_labels, _ = photos(HYMENOPTERA / "val", None)
    sets = {"flowers pool": flower_pool, "flowers test": flower_test, "hymenoptera train": ants_train,
            "hymenoptera val": ants_val, "blank": synthetic(args.out / "blank", "blank", SYNTHETIC),
            "noise": synthetic(args.out / "noise", "noise", SYNTHETIC)}
    features = features_of(sets, args.cache or args.out / "cache")
    hymenoptera_all = np.concatenate([features["hymenoptera train"], features["hymenoptera val"]])
    hymenoptera_labels = np.concatenate([ants_train_labels, ants_val_labels])

    started = time.perf_counter()
    flower_rows, ant_rows = [], []
    for seed in range(args.seeds):
        rng = np.random.default_rng(100 + seed)
        pick = np.concatenate([rng.permutation(np.flatnonzero(flower_pool_labels == c))[:args.per_class]
                               for c in np.unique(flower_pool_labels)])
        flower_rows += evaluate_setup(features["flowers pool"][pick], flower_pool_labels[pick], features["flowers test"], flower_test_labels,
                                      {"ants": hymenoptera_all[hymenoptera_labels == 0], "bees": hymenoptera_all[hymenoptera_labels == 1],
                                       "blank": features["blank"], "noise": features["noise"]},
                                      seed, args.share)
        pick = np.concatenate([rng.permutation(np.flatnonzero(ants_train_labels == c))[:HYMENOPTERA_PER_CLASS]
                               for c in np.unique(ants_train_labels)])
        ant_rows += evaluate_setup(features["hymenoptera train"][pick], ants_train_labels[pick], features["hymenoptera val"], ants_val_labels,
                                   {"flowers": features["flowers test"], "blank": features["blank"], "noise": features["noise"]},
                                   seed, args.share)
    print(f"\nMachine: {machine()}; {args.seeds} seeds; detectors fitted and scored in "
          f"{time.perf_counter() - started:.0f} s; threshold rejects {args.share:.0%} of held-out training photos.\n")
    flowers_title = f"(a) flowers, {args.per_class} photos per class x 5 classes; own test: flowers/val, 150"
    ants_title = f"(b) hymenoptera, {HYMENOPTERA_PER_CLASS} photos per class x 2; own test: hymenoptera/val, 153"
    text = "\n\n".join([table(flower_rows, flowers_title, args.share), table(ant_rows, ants_title, args.share),
                         trade_off(flower_rows, flowers_title[:11]), trade_off(ant_rows, ants_title[:15])])
    print(text)
    (args.out / "tables.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
