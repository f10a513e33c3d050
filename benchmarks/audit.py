"""The audit against labels flipped on purpose, on three datasets a model judges strongly, middling
and weakly: the precision and recall of its label issues against the precision it estimates, and
the test accuracy of a run trained on its `clean.csv` against one trained on the noisy labels.

    .venv/bin/python benchmarks/audit.py --flowers /work/data/flowers/dataset --seeds 3 --out /tmp/audit-bench

Protocol, per dataset and seed (the seed draws the flipped images, the folds and the training):
- **strong**: `hymenoptera`, the 245 photos of `train/` audited and trained on, the 153 of `val/`
  the test set; EfficientNet-Lite0 (ImageNet weights, `../shared/data/efficientnet_lite0`).
- **medium**: `flowers` (TensorFlow's flower_photos, 5 classes): 30 photos per class drawn once
  (seed 1000) from `train/` audited and trained on, 40 per class drawn once from `val/` the test
  set; Lite0.
- **weak**: `shapes` (`transfer dataset shapes`: 4 classes, 50 images each): 150 drawn once
  (stratified, seed 1000) audited and trained on, the other 50 the test set; LeNet-5 trained from
  scratch (`--epochs 15`) on each fold, as the issue's case.
- `--noise` (10%) of each class is given a random other class in a manifest, `noisy.csv` (the files
  untouched). `transfer audit --manifest noisy.csv --seed S` (5 folds): precision = flipped among
  the flagged label issues, recall = flagged among the flipped; beside them the audit's own estimated
  precision (`config.json`) and whether it advised training on `clean.csv`.
- `transfer train` (the default recipe of the backbone) on the audit's `original.csv` (the noisy
  labels with the split the audit fixed) and on its `clean.csv` (the same validation images), the
  same seed, each scored by `transfer evaluate` on the test images, which chose nothing.
Printed: per-run rows, then mean +- sd over seeds per dataset (a markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import pandas as pd
from common import HYMENOPTERA, LITE0, cli, machine, mean_sd

DATASETS = ("hymenoptera", "flowers", "shapes")
STRENGTH = {"hymenoptera": "strong", "flowers": "medium", "shapes": "weak"}
LENET = ("--backbone", "lenet", "--epochs", "15")


def images_of(folder: Path) -> pd.DataFrame:
    return pd.DataFrame(
        [(str(p), c.name) for c in sorted(folder.iterdir()) if c.is_dir() for p in sorted(c.iterdir()) if p.is_file()],
        columns=["path", "label"],
    )


def per_class(images: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    return images.groupby("label", group_keys=False).sample(n=count, random_state=seed).sort_values("path").reset_index(drop=True)


def test_folder(test: pd.DataFrame, folder: Path) -> Path:
    """The test images as a folder of class subfolders of symbolic links (the files stay where they are)."""
    if not folder.is_dir():
        for row in test.itertuples():
            (folder / row.label).mkdir(parents=True, exist_ok=True)
            (folder / row.label / Path(row.path).name).symlink_to(row.path)
    return folder


def dataset(name: str, out: Path, flowers: Path | None) -> tuple[pd.DataFrame, Path, tuple]:
    """`(training images, test folder, backbone options)`."""
    if name == "hymenoptera":
        return images_of(HYMENOPTERA / "train"), HYMENOPTERA / "val", ("--backbone", LITE0)
    if name == "flowers":
        if flowers is None:
            raise SystemExit("flowers needs --flowers DIR (a folder with train/ and val/ of flower_photos)")
        test = per_class(images_of(flowers / "val"), 40, 1000)
        return per_class(images_of(flowers / "train"), 30, 1000), test_folder(test, out / "flowers-test"), ("--backbone", LITE0)
    from sklearn.model_selection import train_test_split

    root = out / "shapes"
    if not root.is_dir():
        cli("dataset", "shapes", root)
    everything = images_of(root)
    train, test = train_test_split(everything, test_size=50, stratify=everything["label"], random_state=1000)
    return train.sort_values("path").reset_index(drop=True), test_folder(test, out / "shapes-test"), LENET


def flip(images: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, set[str]]:
    """The images with `share` of each class given a random other class; the flipped paths."""
    rng = random.Random(seed)
    classes = sorted(images["label"].unique())
    noisy, flipped = images.copy(), set()
    for label, rows in images.groupby("label"):
        for i in rng.sample(list(rows.index), round(share * len(rows))):
            noisy.loc[i, "label"] = rng.choice([c for c in classes if c != label])
            flipped.add(images.loc[i, "path"])
    return noisy, flipped


def test_accuracy(run: Path, test_dir: Path) -> float:
    cli("evaluate", run, test_dir, "--out", run.parent / f"{run.name}-test", "--force")
    return json.loads((run.parent / f"{run.name}-test" / "metrics.json").read_text())["accuracy"]


def one(name: str, images, test_dir, backbone, seed: int, share: float, out: Path) -> dict:
    tag = f"{name}-{seed}"
    noisy, flipped = flip(images, share, seed)
    manifest = out / f"noisy-{tag}.csv"
    noisy.to_csv(manifest, index=False)
    audit = out / f"audit-{tag}"
    cache = ("--cache-dir", out / "cache")
    started = time.perf_counter()
    cli("audit", "--manifest", manifest, *backbone, "--seed", seed, *cache, "--out", audit, "--force")
    seconds = time.perf_counter() - started
    table = pd.read_csv(audit / "audit.csv", keep_default_na=False)
    summary = json.loads((audit / "config.json").read_text())
    flagged = set(table.loc[table["kind"] == "label_issue", "path"])
    original, clean = pd.read_csv(audit / "original.csv"), pd.read_csv(audit / "clean.csv")
    assert set(original.loc[original["split"] == "val", "path"]) == set(clean.loc[clean["split"] == "val", "path"])
    accuracy = {}
    for kind in ("original", "clean"):
        run = out / f"run-{kind}-{tag}"
        cli("train", "--manifest", audit / f"{kind}.csv", *backbone, "--seed", seed, *cache, "--out", run, "--force")
        accuracy[kind] = test_accuracy(run, test_dir)
    hits = len(flagged & flipped)
    return {"dataset": name, "seed": seed, "images": len(images), "oof_accuracy": summary["out_of_fold_accuracy"],
            "flipped": len(flipped), "flagged": len(flagged), "hits": hits,
            "precision": hits / len(flagged) if flagged else None, "recall": hits / len(flipped),
            "estimated_precision": summary["estimated_precision"], "noise_rate": summary["estimated_noise_rate"],
            "advised": summary["clean_advised"], "test_acc_noisy": accuracy["original"], "test_acc_clean": accuracy["clean"],
            "test_acc_advice": accuracy["clean" if summary["clean_advised"] else "original"], "audit_s": seconds}


def cell(values, digits: int = 3) -> str:
    values = [v for v in values if v is not None and v == v]
    return mean_sd(values, digits) if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--flowers", type=Path, help="flower_photos with train/ and val/ (for the medium dataset)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.10)
    parser.add_argument("--out", type=Path, default=Path("/tmp/audit-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}\n", flush=True)
    rows = []
    for name in args.datasets.split(","):
        images, test_dir, backbone = dataset(name, args.out, args.flowers)
        for seed in range(args.seeds):
            rows.append(one(name, images, test_dir, backbone, seed, args.noise, args.out))
            print(json.dumps(rows[-1]), flush=True)
            pd.DataFrame(rows).to_csv(args.out / "results.csv", index=False)
    table = pd.DataFrame(rows)
    print(f"\n{args.noise:.0%} of each class flipped; mean +- sd over {args.seeds} seeds; test images chose nothing")
    print("| dataset | images (test) | out-of-fold accuracy | flipped | flagged | precision | estimated precision | recall "
          "| clean.csv advised | test acc, noisy | test acc, clean.csv | test acc, following the advice |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, group in table.groupby("dataset", sort=False):
        test_images = sum(1 for p in dataset(name, args.out, args.flowers)[1].rglob("*") if p.is_file() or p.is_symlink())
        print(f"| {name} ({STRENGTH[name]}) | {group['images'].iloc[0]} ({test_images}) | {cell(group['oof_accuracy'])} | "
              f"{group['flipped'].iloc[0]} | {cell(group['flagged'], 1)} | {cell(group['precision'])} | "
              f"{cell(group['estimated_precision'])} | {cell(group['recall'])} | {int(group['advised'].sum())}/{len(group)} | "
              f"{cell(group['test_acc_noisy'])} | {cell(group['test_acc_clean'])} | {cell(group['test_acc_advice'])} |")
    print(f"\nAudit wall time: median {table['audit_s'].median():.1f} s")


if __name__ == "__main__":
    main()
