"""Refitting the logistic head on train + validation (the default) against fitting it on the
training split alone (`--no-refit`), on real pretrained features, scored on test images that chose
nothing.

    nice -n 5 .venv/bin/python benchmarks/refit.py --seeds 3 --out /tmp/refit-bench

Backbone: EfficientNet-Lite0 (ImageNet, `../shared/data/efficientnet_lite0`), its pooled features
computed once by `transfer features` through the feature cache (`--cache-dir`, default the tool's
own), so a second invocation skips the backbone and the whole benchmark is the fits.

Datasets (the pool the labelled images are drawn from; the test set apart from it):
- hymenoptera: pool `../shared/data/hymenoptera/train` (2 classes, 244 photos), test `val/` (153).
- flowers: pool `/work/data/flowers/dataset/train` (5 classes, 2,943 photos), test `val/` (745).

Protocol, per seed 0, 1, 2 and size 5, 10, 20 per class or "all": the seed draws that many photos of
each class from the pool (the user's labelled images); `transfer train`'s own split rule
(`transfer.data.folders._stratified_split`, `--val-split 0.2`, seeded) holds a fifth of them out for
validation. Then the run's own fits on the features:
- no refit (`--no-refit`): `logistic_regression` (C by cross-validation) on the training split alone;
- refit (the default): the same on training + validation.
Both are scored on every test image. "estimate" is what a refit run reports: the accuracy of the
out-of-fold probabilities over the drawn images (`logistic_out_of_fold` over `stratified_folds`, C
chosen inside each fold), printed beside the test accuracy to show whether the reported number is honest
(`--estimate-sizes`: the sizes it is computed at, as it costs five fits more).
Rows go to OUT/results.csv as they finish; a rerun with the same `--out` skips finished rows and
prints the table of all of them (so `--seeds 10 --datasets hymenoptera` adds seeds to a finished run).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from common import HYMENOPTERA, LITE0, cli, machine, mean_sd  # noqa: E402

FLOWERS = Path("/work/data/flowers/dataset")
VAL_SPLIT = 0.2


def features(folder: Path, target: Path, cache: Path | None):
    """`transfer features` of `folder` (Lite0, through the cache) as a frame: path, label, f0..."""
    import keras
    import pandas as pd

    if not target.exists():
        cli("features", LITE0, folder, "--out", target, *(["--cache-dir", cache] if cache else []))
        keras.backend.clear_session()
    return pd.read_parquet(target)


def draw(pool, size: str, seed: int):
    """`size` photos of each class of `pool` (all for "all"), split as `transfer train` splits them."""
    import numpy as np
    import pandas as pd

    from transfer.data.folders import _stratified_split

    rng = np.random.default_rng(seed)
    picked = []
    for _, rows in pool.groupby("label", sort=True):
        order = rng.permutation(rows.index.to_numpy())
        picked += list(order if size == "all" else order[:int(size)])
    drawn = pool.loc[picked]
    return drawn.assign(split=pd.Series(_stratified_split(drawn, VAL_SPLIT, seed), index=drawn.index))


def run_case(drawn, test, classes: list[str], seed: int, estimate: bool) -> dict:
    """Test accuracy without and with the refit, and the refit run's out-of-fold estimate."""
    import numpy as np

    from transfer.metrics.logistic import logistic_out_of_fold, logistic_regression, stratified_folds

    columns = [c for c in drawn.columns if c.startswith("f")]
    index = {name: i for i, name in enumerate(classes)}
    x, y = drawn[columns].to_numpy(np.float32), drawn["label"].map(index).to_numpy()
    test_x, test_y = test[columns].to_numpy(np.float32), test["label"].map(index).to_numpy()
    train = (drawn["split"] == "train").to_numpy()
    row = {}
    for name, rows in (("no refit", train), ("refit", np.ones_like(train))):
        started = time.perf_counter()
        regression, c, _ = logistic_regression(x[rows], y[rows], len(classes), seed=seed)
        row[name] = float(np.mean(regression.predict(test_x) == test_y))
        row[f"{name} C"], row[f"{name} seconds"] = c, time.perf_counter() - started
    if estimate:
        probabilities = logistic_out_of_fold(x, y, stratified_folds(y, len(classes), seed=seed), len(classes), seed=seed)
        row["estimate"] = float(np.mean(probabilities.argmax(1) == y))
    row["images"], row["trained without refit"] = len(y), int(train.sum())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sizes", default="5,10,20,all")
    parser.add_argument("--estimate-sizes", default="5,10,20,all", help="sizes at which the out-of-fold estimate is made (none: at none)")
    parser.add_argument("--datasets", default="hymenoptera,flowers")
    parser.add_argument("--out", type=Path, default=Path("/tmp/refit-bench"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="the feature cache (default: the tool's own)")
    args = parser.parse_args()

    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    sources = {"hymenoptera": HYMENOPTERA, "flowers": FLOWERS}
    results = args.out / "results.csv"
    rows, started = (pd.read_csv(results, dtype={"size": str}).to_dict("records") if results.exists() else []), time.perf_counter()
    done = {(row["dataset"], str(row["size"]), int(row["seed"])) for row in rows}
    for dataset in args.datasets.split(","):
        pool = features(sources[dataset] / "train", args.out / f"{dataset}-pool.parquet", args.cache_dir)
        test = features(sources[dataset] / "val", args.out / f"{dataset}-test.parquet", args.cache_dir)
        classes = sorted(pool["label"].unique())
        assert sorted(test["label"].unique()) == classes and not set(pool["path"]) & set(test["path"])
        for size in args.sizes.split(","):
            for seed in range(args.seeds):
                if (dataset, size, seed) in done:
                    continue
                row = run_case(draw(pool, size, seed), test, classes, seed, size in args.estimate_sizes.split(","))
                rows.append({"dataset": dataset, "size": size, "seed": seed, "test images": len(test), **row})
                pd.DataFrame(rows).to_csv(results, index=False)
                print(f"[{time.perf_counter() - started:5.0f} s] {dataset} {size}/class seed {seed}: no refit "
                      f"{row['no refit']:.3f}, refit {row['refit']:.3f}" + (f", estimate {row['estimate']:.3f}" if "estimate" in row else ""), flush=True)
    print(render(pd.DataFrame(rows)))
    print(f"\n{machine()}; {time.perf_counter() - started:.0f} s in all.")


def render(frame) -> str:
    lines = ["| dataset | photos per class | images (trained without refit) | test | seeds | no refit | refit | gain | refit run's estimate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, size), group in frame.groupby(["dataset", "size"], sort=False):
        gain = group["refit"] - group["no refit"]
        estimate = mean_sd(group["estimate"]) if "estimate" in group and group["estimate"].notna().all() else "not computed"
        lines.append(f"| {dataset} | {size} | {group['images'].iloc[0]} ({group['trained without refit'].iloc[0]}) | "
                     f"{group['test images'].iloc[0]} | {len(group)} | {mean_sd(group['no refit'])} | {mean_sd(group['refit'])} | "
                     f"{mean_sd(gain)} | {estimate} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
