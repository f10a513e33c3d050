"""The probe's ranking against full training's, and its time against `compare`'s.

    .venv/bin/python benchmarks/probe.py --out /tmp/probe-bench

Protocol: hymenoptera, `train/` (245 photos) and `val/` (153). Candidates: EfficientNet-Lite0 with
its ImageNet weights (`../shared/data/efficientnet_lite0`), the registry's ResNet50, VGG16 and
InceptionV3 with random weights (`--weights none`: no ImageNet weights here), and LeNet-5 and
AlexNet. First `transfer probe train/` (5-fold linear probe and LogME on frozen features of the
245 photos; the baselines through their randomly initialized convolutions), then `transfer compare
train/` (each trained by the default recipe on compare's own split of train/, which picks the epoch:
the logistic head on a frozen backbone, the baselines from scratch for 10 epochs) with the same
feature cache; then each run scored by `transfer evaluate` on `val/` (153 photos that chose nothing).
Printed: both rankings, their Spearman correlation (and the probe's LogME's), whether the top
choice agrees, and the wall time of each command.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import pandas as pd
from common import HYMENOPTERA, LITE0, cli, machine

BACKBONES = [str(LITE0), "resnet50", "vgg16", "inceptionv3", "lenet", "alexnet"]


def main() -> None:
    from scipy.stats import spearmanr

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/probe-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}\n", flush=True)
    common = ["--backbones", ",".join(BACKBONES), "--weights", "none", "--cache-dir", args.out / "cache"]
    started = time.perf_counter()
    cli("probe", HYMENOPTERA / "train", *common, "--out", args.out / "probe", "--force")
    probe_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cli("compare", HYMENOPTERA / "train", *common, "--out", args.out / "compare", "--force")
    compare_seconds = time.perf_counter() - started
    probe = pd.read_csv(args.out / "probe" / "probe.csv", keep_default_na=False)
    leaderboard = pd.read_csv(args.out / "compare" / "leaderboard.csv", keep_default_na=False)
    test = []  # each trained run scored on val/, which chose nothing (compare's own split picked the epoch)
    for row in leaderboard.itertuples():
        cli("evaluate", row.run_dir, HYMENOPTERA / "val", "--out", args.out / "test" / Path(row.run_dir).name, "--force")
        test.append(json.loads((args.out / "test" / Path(row.run_dir).name / "metrics.json").read_text())["accuracy"])
    leaderboard = leaderboard.assign(val_accuracy=test)  # the column the table reads: test accuracy on val/
    table = probe[["backbone", "accuracy", "log_me"]].merge(
        leaderboard[["backbone", "mode", "val_accuracy"]], on="backbone").astype({"accuracy": float, "log_me": float, "val_accuracy": float})
    table["backbone"] = table["backbone"].map(lambda name: Path(name).stem if name.endswith(".keras") else name)
    rho_probe = spearmanr(table["accuracy"], table["val_accuracy"]).statistic
    rho_logme = spearmanr(table["log_me"], table["val_accuracy"]).statistic
    top_probe, top_train = table.loc[table["accuracy"].idxmax(), "backbone"], table.loc[table["val_accuracy"].idxmax(), "backbone"]
    print("\n| backbone | probe accuracy (5-fold, train/) | LogME | trained by compare, test accuracy on val/ | mode |")
    print("|---|---|---|---|---|")
    for row in table.sort_values("val_accuracy", ascending=False).itertuples():
        print(f"| {row.backbone} | {row.accuracy:.3f} | {row.log_me:.3f} | {row.val_accuracy:.3f} | {row.mode} |")
    print(f"\nSpearman, probe accuracy vs trained: {rho_probe:.3f}; LogME vs trained: {rho_logme:.3f}; "
          f"top choice: probe {top_probe}, training {top_train} ({'agree' if top_probe == top_train else 'disagree'})")
    print(f"Wall time: probe {probe_seconds:.0f} s, compare {compare_seconds:.0f} s (ratio {compare_seconds / probe_seconds:.1f}x; "
          f"compare reused the probe's feature cache)")
    (args.out / "summary.json").write_text(json.dumps({"spearman_probe": rho_probe, "spearman_logme": rho_logme,
                                                       "top_probe": top_probe, "top_train": top_train,
                                                       "probe_seconds": probe_seconds, "compare_seconds": compare_seconds}))


if __name__ == "__main__":
    main()
