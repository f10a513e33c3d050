"""The audit against labels flipped on purpose: the precision and recall of its label issues, and
the test accuracy of a run trained on its `clean.csv` against one trained on the noisy labels.

    .venv/bin/python benchmarks/audit.py --seeds 5 --out /tmp/audit-bench
    .venv/bin/python benchmarks/audit.py --dataset digits --seeds 5 --out /tmp/audit-bench-digits

Protocol, per dataset, seed and noise share (0%, 5%, 10%):
- **hymenoptera**: the 245 photos of `hymenoptera/train` are audited and trained on; the 153 of
  `hymenoptera/val` are the test set, which chooses nothing. **digits**: the built-in generated
  digits (1,797 images, 10 classes), a stratified 30% drawn once (seed 1000) as the test set, the
  rest audited and trained on.
- That share of the training images, drawn with the seed in each class, is given a wrong label (a
  random other class) in a manifest, `noisy.csv`; the files are not touched.
- `transfer audit --manifest noisy.csv --backbone LITE0 --seed S` (EfficientNet-Lite0, ImageNet
  weights, `../shared/data/efficientnet_lite0`; 5 folds): precision = flipped among the flagged
  label issues, recall = flagged among the flipped. At 0% every flag is an image whose given label
  is the original one (a doubt about the dataset itself, or a false alarm).
- `transfer train` (the default recipe on Lite0: the logistic head) on `noisy.csv` and on the
  audit's `clean.csv`, the same seed, each scored by `transfer evaluate` on the test set.
Printed: per-run rows, then mean +- sd over seeds per noise share.
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

NOISE = (0.0, 0.05, 0.10)
BACKBONE = LITE0


def images_of(folder: Path) -> pd.DataFrame:
    return pd.DataFrame(
        [(str(p), c.name) for c in sorted(folder.iterdir()) if c.is_dir() for p in sorted(c.iterdir()) if p.is_file()],
        columns=["path", "label"],
    )


def dataset(name: str, out: Path) -> tuple[pd.DataFrame, Path]:
    """`(training images, test folder)`."""
    if name == "hymenoptera":
        return images_of(HYMENOPTERA / "train"), HYMENOPTERA / "val"
    from sklearn.model_selection import train_test_split

    root = out / "digits"
    if not root.is_dir():
        cli("dataset", "digits", root)
    everything = images_of(root)
    train, test = train_test_split(everything, test_size=0.3, stratify=everything["label"], random_state=1000)
    test_dir = out / "digits-test"
    if not test_dir.is_dir():
        for row in test.itertuples():
            (test_dir / row.label).mkdir(parents=True, exist_ok=True)
            (test_dir / row.label / Path(row.path).name).symlink_to(row.path)
    return train.reset_index(drop=True), test_dir


def flip(images: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, set[str]]:
    """The images with `share` of each class given a random other class; the flipped paths."""
    rng = random.Random(seed)
    classes = sorted(images["label"].unique())
    noisy, flipped = images.copy(), set()
    for label, rows in images.groupby("label"):
        chosen = rng.sample(list(rows.index), round(share * len(rows)))
        for i in chosen:
            noisy.loc[i, "label"] = rng.choice([c for c in classes if c != label])
            flipped.add(images.loc[i, "path"])
    return noisy, flipped


def test_accuracy(run: Path, test_dir: Path) -> float:
    cli("evaluate", run, test_dir, "--out", run.parent / f"{run.name}-test", "--force")
    return json.loads((run.parent / f"{run.name}-test" / "metrics.json").read_text())["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("hymenoptera", "digits"), default="hymenoptera")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/audit-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}\n", flush=True)
    images, test_dir = dataset(args.dataset, args.out)
    cache = ["--cache-dir", args.out / "cache"]
    rows = []
    for seed in range(args.seeds):
        for share in NOISE:
            name = f"{int(share * 100)}pct-{seed}"
            noisy, flipped = flip(images, share, seed)
            manifest = args.out / f"noisy-{name}.csv"
            noisy.to_csv(manifest, index=False)
            audit = args.out / f"audit-{name}"
            started = time.perf_counter()
            cli("audit", "--manifest", manifest, "--backbone", BACKBONE, "--seed", seed, *cache, "--out", audit, "--force")
            seconds = time.perf_counter() - started
            table = pd.read_csv(audit / "audit.csv", keep_default_na=False)
            flagged = set(table.loc[table["kind"] == "label_issue", "path"])
            hits = len(flagged & flipped)
            accuracy = {}
            for kind, data in (("noisy", manifest), ("clean", audit / "clean.csv")):
                run = args.out / f"run-{kind}-{name}"
                cli("train", "--manifest", data, "--backbone", BACKBONE, "--seed", seed, *cache, "--out", run, "--force")
                accuracy[kind] = test_accuracy(run, test_dir)
            row = {"seed": seed, "noise": share, "flipped": len(flipped), "flagged": len(flagged), "hits": hits,
                   "precision": hits / len(flagged) if flagged and flipped else None,
                   "recall": hits / len(flipped) if flipped else None,
                   "test_acc_noisy": accuracy["noisy"], "test_acc_clean": accuracy["clean"], "audit_s": seconds}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "results.csv", index=False)
    print(f"\n{args.dataset}, {len(images)} training images, Lite0 features, 5-fold audit; mean +- sd over {args.seeds} seeds")
    print("| flipped | flipped images | flagged | precision | recall | test acc, trained on noisy.csv | test acc, trained on clean.csv |")
    print("|---|---|---|---|---|---|---|")
    for share, group in table.groupby("noise"):
        def cell(column):
            values = group[column].dropna()
            return mean_sd(values) if len(values) else "-"

        print(f"| {share:.0%} | {group['flipped'].iloc[0]} | {cell('flagged')} | {cell('precision')} | {cell('recall')} | "
              f"{cell('test_acc_noisy')} | {cell('test_acc_clean')} |")
    print(f"\nAudit wall time (features from the cache after the first): median {table['audit_s'].median():.1f} s")


if __name__ == "__main__":
    main()
