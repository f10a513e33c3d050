"""Multi-label on the built-in shapes: mean average precision and exact label sets of a baseline
from scratch, a frozen real backbone and a fine-tuned one, scored on images that chose nothing.

    .venv/bin/python benchmarks/multilabel.py --seeds 3 --out /tmp/multilabel-bench

Protocol: `transfer dataset shapes-multi` (600 images of zero to three shapes, seed 0) to train on,
its split's validation images choosing the epoch and each label's threshold; a second set drawn
with another seed (300 images, seed 1) as the test set, which chooses nothing. Per seed (the
split, the initialization, the shuffling), three recipes through `transfer train --manifest`:
- `lenet`: LeNet-5 from scratch, 40 epochs, no flips;
- `lite0-frozen`: EfficientNet-Lite0 with ImageNet weights (`../shared/data/efficientnet_lite0`),
  frozen, one logistic regression per label on its features (the default recipe);
- `lite0-finetuned`: the same backbone, a dense head for 5 epochs, then the top 30 layers
  fine-tuned for 5 epochs at 1e-4.
Each run is scored by `transfer evaluate --manifest` on the test set with its own thresholds.
Printed: per-run rows, then mean +- sd over seeds of mAP, exact label sets and micro F1.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import pandas as pd
from common import LITE0, cli, machine, mean_sd

RECIPES = {
    "lenet": ["--backbone", "lenet", "--epochs", "40", "--flip", "none"],
    "lite0-frozen": ["--backbone", LITE0],
    "lite0-finetuned": ["--backbone", LITE0, "--head", "dense", "--epochs", "5", "--finetune-epochs", "5",
                        "--finetune-lr", "1e-4", "--unfreeze", "30"],
}


def test_manifest(out: Path) -> Path:
    """The test set: another draw of the shapes, its paths made absolute."""
    from transfer.datasets.shapes_multi import materialize

    folder = out / "test-images"
    if not folder.is_dir():
        materialize(folder, images=300, seed=1)
    table = pd.read_csv(folder / "labels.csv", keep_default_na=False)
    table["path"] = [str(folder / p) for p in table["path"]]
    table.to_csv(out / "test.csv", index=False)
    return out / "test.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/multilabel-bench"))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}\n", flush=True)
    train_set = args.out / "train-images"
    if not train_set.is_dir():
        from transfer.datasets.shapes_multi import materialize

        materialize(train_set, images=600, seed=0)
    test = test_manifest(args.out)
    rows = []
    for seed in range(args.seeds):
        for recipe in args.recipes.split(","):
            run = args.out / f"{recipe}-{seed}"
            cli("train", "--manifest", train_set / "labels.csv", *RECIPES[recipe], "--seed", seed,
                "--cache-dir", args.out / "cache", "--out", run, "--force")
            cli("evaluate", run, "--manifest", test, "--out", args.out / f"{run.name}-test", "--force")
            scores = json.loads((args.out / f"{run.name}-test" / "metrics.json").read_text())
            kept = json.loads((run / "metrics.json").read_text())
            row = {"seed": seed, "recipe": recipe, "map": scores["mean_average_precision"], "exact": scores["exact_match"],
                   "micro_f1": scores["micro_f1"], "macro_f1": scores["macro_f1"], "stage_kept": kept["best_stage"],
                   "train_seconds": kept["train_seconds"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "results.csv", index=False)
    print(f"\nshapes-multi: 600 training images (480 train / 120 validation), 300 test images; mean +- sd over {args.seeds} seeds")
    print("| recipe | test mAP | test exact label sets | test micro F1 | stage kept | train s |")
    print("|---|---|---|---|---|---|")
    for recipe, group in table.groupby("recipe", sort=False):
        print(f"| {recipe} | {mean_sd(group['map'])} | {mean_sd(group['exact'])} | {mean_sd(group['micro_f1'])} | "
              f"{', '.join(group['stage_kept'])} | {group['train_seconds'].median():.0f} |")


if __name__ == "__main__":
    main()
