"""The default transfer recipe on real pretrained features: EfficientNet-Lite0 (ImageNet) on
hymenoptera, confirmed on the synthetic shapes the backbone cannot have seen.

    .venv/bin/python benchmarks/real_features.py --seeds 3 --finetune-seeds-all 2 --out /tmp/realfeat/bench

(Published numbers: first run without `--finetune-seeds-all`, then the same command with
`--finetune-seeds-all 2` on the same `--out`, which only added the fine-tuning runs at size "all":
the three fine-tuning candidates take 2 seeds there, marked n=2, to fit the time budget.)

Machine of the published numbers: 2 CPU cores (`lscpu | grep 'Model name'`: AMD EPYC), shared with
other processes (timings are noisy), no GPU.

Protocol (per seed 0, 1, 2; the seed redraws the images and seeds `transfer train`):
- hymenoptera: from `../shared/data/hymenoptera/train`, 15 images per class for validation (the
  manifest's split=val rows: epoch selection and early stopping only), then 5, 10 or 20 training
  images per class, or "all" (the rest of train); the draws are nested (5 is a subset of 10...).
  Test: all of `hymenoptera/val` (153 images), scored by `transfer evaluate RUN TEST --out ...`
  (accuracy read from its `metrics.json`); the test images choose nothing.
- shapes (images the backbone cannot have seen): the pool is `transfer dataset shapes` (4 classes x
  50, generator seed 0), drawn the same way (15 val per class, then 5 or 20 train per class); test
  is a separately generated set (the same generator with seed 1, 50 per class, 200 images).

Candidates (all `--backbone efficientnet_lite0_notop.keras`, default `--preprocess none`):
- dense: the default before this benchmark chose another (`--head dense`: frozen stage, `--epochs
  10`, dense softmax head, Adam 1e-3). Every candidate names its head: the default is now logistic.
- logistic: `--head logistic` (scikit-learn logistic regression, C by cross-validation).
- lp-ft: `--head logistic --finetune-epochs 5 --finetune-lr 1e-5` (Adam, the default cosine
  fine-tuning schedule): LP-FT (Kumar et al. 2022).
- fastai: fastai's `fine_tune`: `--epochs 1 --schedule onecycle --finetune-epochs 5
  --finetune-schedule onecycle --lr 2e-3 --finetune-lr 1e-4` (fastai halves base_lr 2e-3 and gives the
  body base_lr/100 and the head base_lr; the tool has one rate per stage, so 1e-4 sits in between).
- keras-guide: the Keras transfer-learning guide: `--epochs 10`, then `--finetune-epochs 5
  --finetune-lr 1e-5` (everything unfrozen; BatchNormalization stays frozen).
- sklearn floor: `StandardScaler` + `LogisticRegression(C=1.0, max_iter=5000)` on the training
  images' pooled features (from `transfer features`, the tool's own decoding), scored on the test
  images' features.
- logistic refit on train+val: the sklearn floor fitted on the training and validation images.

Seconds: the mean wall time of `transfer train` (run in this process, so without the ~6 s of Python
and TensorFlow start-up a shell command pays; evaluation not included). The feature cache
(`--cache-dir OUT/cache`) is shared by every candidate and warmed before any run by `transfer
features` on every image, so no run's frozen stage pays for the backbone; fine-tuning runs it
anyway. For the sklearn rows, seconds are the fit alone on those precomputed features.
Rows go to `OUT/results.csv` as they finish; a rerun with the same `--out` skips finished rows
(delete the file to start over). The tables are printed and written to `OUT/tables.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from common import HYMENOPTERA, LITE0
VAL_PER_CLASS = 15
FT = ["--finetune-epochs", "5"]
CANDIDATES = {
    "dense": ["--head", "dense"],
    "logistic": ["--head", "logistic"],
    "lp-ft": ["--head", "logistic", *FT, "--finetune-lr", "1e-5", "--optimizer", "adam"],
    "fastai": ["--head", "dense", "--epochs", "1", "--schedule", "onecycle", "--lr", "2e-3", *FT, "--finetune-schedule", "onecycle",
               "--finetune-lr", "1e-4"],
    "keras-guide": ["--head", "dense", "--epochs", "10", *FT, "--finetune-lr", "1e-5"],
}
FINETUNING = {"lp-ft", "fastai", "keras-guide"}
SKLEARN = ("sklearn floor", "logistic refit on train+val")
ORDER = [*CANDIDATES, *SKLEARN]


def cli(*args: str) -> None:
    """`transfer ARGS...`, in this process (the installed Typer app, without its start-up)."""
    from transfer.cli import app

    try:
        app([str(a) for a in args], standalone_mode=False)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise RuntimeError(f"transfer {' '.join(map(str, args))} exited with {exit_.code}") from None


def draws(pool, seed: int, sizes: list[str]) -> dict[str, tuple[list, list]]:
    """Size -> (train rows, val rows) of `pool` (a features frame), nested over the sizes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = {}
    for label, group in pool.groupby("label", sort=True):
        picks[label] = list(rng.permutation(group.index.to_numpy()))
    out = {}
    for size in sizes:
        train, val = [], []
        for order in picks.values():
            val += order[:VAL_PER_CLASS]
            train += order[VAL_PER_CLASS:] if size == "all" else order[VAL_PER_CLASS:VAL_PER_CLASS + int(size)]
        out[size] = (train, val)
    return out


def sklearn_accuracy(pool, rows: list, test) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    columns = [c for c in pool.columns if c.startswith("f")]
    started = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    model.fit(pool.loc[rows, columns].to_numpy(), pool.loc[rows, "label"].to_numpy())
    seconds = time.perf_counter() - started
    return float(model.score(test[columns].to_numpy(), test["label"].to_numpy())), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/realfeat/bench"))
    parser.add_argument("--sizes", default="5,10,20,all", help="hymenoptera training images per class")
    parser.add_argument("--finetune-sizes", default="5,10,20", help="sizes at which the fine-tuning candidates run")
    parser.add_argument("--finetune-seeds-all", type=int, default=0,
                        help="seeds of the fine-tuning candidates at size 'all' (0: none, too slow here)")
    parser.add_argument("--shapes-sizes", default="5,20")
    parser.add_argument("--shapes-candidates", default="dense,logistic,lp-ft")
    parser.add_argument("--only", default="hymenoptera,shapes")
    args = parser.parse_args()

    import keras
    import pandas as pd

    from transfer.datasets.shapes import materialize

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    results_csv = out / "results.csv"
    rows = pd.read_csv(results_csv).to_dict("records") if results_csv.exists() else []
    done = {(r["task"], r["candidate"], str(r["size"]), int(r["seed"])) for r in rows}
    started_all = time.perf_counter()

    def features(folder: Path, name: str):
        target = out / f"{name}.parquet"
        if not target.exists():
            cli("features", LITE0, folder, "--out", target, "--cache-dir", cache)
            keras.backend.clear_session()
        frame = pd.read_parquet(target)
        frame["path"] = frame["path"].map(lambda p: str(Path(p).resolve()))
        return frame

    tasks = {}
    if "hymenoptera" in args.only:
        tasks["hymenoptera"] = dict(
            pool=features(HYMENOPTERA / "train", "hymenoptera-train"), test_dir=HYMENOPTERA / "val",
            test=features(HYMENOPTERA / "val", "hymenoptera-val"), sizes=args.sizes.split(","),
            candidates=list(CANDIDATES), finetune_sizes=args.finetune_sizes.split(","),
        )
    if "shapes" in args.only:
        pool_dir, test_dir = out / "shapes", out / "shapes-test"
        if not pool_dir.exists():
            cli("dataset", "shapes", pool_dir)
        if not test_dir.exists():
            materialize(test_dir, per_class=50, seed=1)  # the same generator, other images
        tasks["shapes"] = dict(
            pool=features(pool_dir, "shapes-pool"), test_dir=test_dir, test=features(test_dir, "shapes-test"),
            sizes=args.shapes_sizes.split(","), candidates=args.shapes_candidates.split(","),
            finetune_sizes=args.shapes_sizes.split(","),
        )

    def record(row: dict) -> None:
        rows.append(row)
        pd.DataFrame(rows).to_csv(results_csv, index=False)
        print(f"[{time.perf_counter() - started_all:6.0f} s] {row['task']} {row['candidate']} size {row['size']} "
              f"seed {row['seed']}: test accuracy {row['test_accuracy']:.3f} ({row['seconds']:.1f} s)", flush=True)

    for task, spec in tasks.items():
        pool, test = spec["pool"], spec["test"]
        for size in spec["sizes"]:
            for seed in range(args.seeds):
                train_rows, val_rows = draws(pool, seed, spec["sizes"])[size]
                for name, fit_rows in zip(SKLEARN, (train_rows, train_rows + val_rows)):
                    if (task, name, size, seed) not in done:
                        accuracy, seconds = sklearn_accuracy(pool, fit_rows, test)
                        record(dict(task=task, candidate=name, size=size, seed=seed, test_accuracy=accuracy,
                                    seconds=seconds, train_images=len(fit_rows), val_images=0))
                manifest = out / "manifests" / f"{task}-{size}-{seed}.csv"
                manifest.parent.mkdir(exist_ok=True)
                pd.concat([pool.loc[train_rows, ["path", "label"]].assign(split="train"),
                           pool.loc[val_rows, ["path", "label"]].assign(split="val")]).to_csv(manifest, index=False)
                for name in spec["candidates"]:
                    if (task, name, size, seed) in done:
                        continue
                    if name in FINETUNING and size not in spec["finetune_sizes"] and not (
                            size == "all" and seed < args.finetune_seeds_all):
                        continue
                    run = out / "runs" / f"{task}-{name}-{size}-{seed}"
                    shutil.rmtree(run, ignore_errors=True)
                    started = time.perf_counter()
                    cli("train", "--manifest", manifest, "--backbone", LITE0, "--cache-dir", cache, "--out", run,
                        "--seed", seed, *CANDIDATES[name])
                    seconds = time.perf_counter() - started
                    keras.backend.clear_session()
                    cli("evaluate", run, spec["test_dir"], "--out", run / "test")
                    keras.backend.clear_session()
                    metrics = json.loads((run / "test" / "metrics.json").read_text())
                    assert metrics["num_images"] == len(test), metrics["num_images"]
                    record(dict(task=task, candidate=name, size=size, seed=seed, test_accuracy=metrics["accuracy"],
                                seconds=seconds, train_images=len(train_rows), val_images=len(val_rows)))
                    for heavy in run.glob("*.keras"):
                        heavy.unlink()  # keep metrics, logs and the evaluation; drop the 14 MB models

    tables = render(pd.DataFrame(rows), tasks)
    print(tables)
    (out / "tables.md").write_text(tables)
    print(f"total wall time of this invocation: {time.perf_counter() - started_all:.0f} s; rows: {results_csv}")


def render(frame, tasks: dict) -> str:
    lines = []
    for task, spec in tasks.items():
        part = frame[frame["task"] == task]
        sizes = spec["sizes"]
        trained = part[part["candidate"] != SKLEARN[1]]  # the refit also counts the validation images
        counts = trained.groupby(["size"])["train_images"].max().to_dict() if len(trained) else {}
        lines += ["", f"## {task}: test accuracy, mean +- sd over seeds (mean seconds of `transfer train` per run)", "",
                  "| candidate | " + " | ".join(f"{s}/class" if s != "all" else f"all ({counts.get('all', '?')} train images)"
                                                for s in sizes) + " |",
                  "|---" * (len(sizes) + 1) + "|"]
        for name in ORDER:
            cells = []
            for size in sizes:
                group = part[(part["candidate"] == name) & (part["size"].astype(str) == size)]
                if not len(group):
                    cells.append("not run")
                    continue
                accuracy = group["test_accuracy"].tolist()
                sd = statistics.stdev(accuracy) if len(accuracy) > 1 else float("nan")
                n = f", n={len(accuracy)}" if len(accuracy) != part["seed"].nunique() else ""
                cells.append(f"{statistics.mean(accuracy):.3f} +- {sd:.3f} ({statistics.mean(group['seconds']):.0f} s{n})")
            if any(c != "not run" for c in cells):
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        test_n = len(spec["test"])
        lines.append(f"\n{test_n} test images; validation {VAL_PER_CLASS} per class from the training pool; "
                     "n=K: fewer seeds than the rest; not run: skipped for time.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
