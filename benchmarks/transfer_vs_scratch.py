"""LeNet-5 trained on digits 0-4, reused for digits 5-9 with few images, against LeNet-5 from scratch:
validation accuracy of each side's best validation epoch (the same rule for every side; the images
that picked the epoch score it, so every number is optimistic by the same selection).

    .venv/bin/python benchmarks/transfer_vs_scratch.py [--seeds 3] [--shots 2,5,10,20]

Offline, from scikit-learn's digits (the built-in `digits` dataset): a source run, LeNet-5 on all
images of 0-4 (20 epochs). Then, for each number of training images per class of 5-9 and each seed
(which images), on the same 30 validation images per class: LeNet-5 from scratch; the source run's
convolutional layers frozen under a new dense head (`--weights SOURCE`); the same, then fine-tuned
(`--finetune-epochs`); and `--head logistic`. Prints validation accuracy, mean and standard deviation
over the seeds.

Then the feature cache: `transfer train --backbone resnet50 --weights none --head logistic` on the
shared hymenoptera photos twice, the second served from the cache, and the ratio of the wall times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from common import HYMENOPTERA, mean_sd
VAL_PER_CLASS = 30


def subset(source: Path, destination: Path, classes, picks: dict) -> Path:
    for digit in classes:
        (destination / digit).mkdir(parents=True)
        for path in picks[digit]:
            shutil.copy(source / digit / path, destination / digit / path)
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", default="2,5,10,20")
    args = parser.parse_args()
    shots = [int(s) for s in args.shots.split(",")]

    import keras
    import numpy as np

    from transfer.datasets.digits import materialize
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    work = Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    digits = materialize(work / "digits")
    old, new = [str(d) for d in range(5)], [str(d) for d in range(5, 10)]
    files = {d: sorted(p.name for p in (digits / d).iterdir()) for d in old + new}
    source_data = subset(digits, work / "source", old, files)
    started = time.perf_counter()
    source = train(source_data, work / "source-run", TrainOptions(backbone="lenet", epochs=20, flip="none", seed=0), verbose=0)
    print(f"source: LeNet-5 on digits 0-4 ({source.metrics['num_train']} train images), val_accuracy "
          f"{source.metrics['val_accuracy']:.3f}, {time.perf_counter() - started:.0f} s")
    val = subset(digits, work / "val", new, {d: files[d][:VAL_PER_CLASS] for d in new})

    modes = {
        "scratch": dict(backbone="lenet", epochs=30),
        "transferred, frozen": dict(weights=str(source.run_dir), epochs=30),
        "transferred, fine-tuned": dict(weights=str(source.run_dir), epochs=30, finetune_epochs=20),
        "--head logistic": dict(weights=str(source.run_dir), head="logistic"),
    }
    results = {(mode, n): [] for mode in modes for n in shots}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        for n in shots:
            picks = {d: list(rng.choice(files[d][VAL_PER_CLASS:], n, replace=False)) for d in new}
            data = subset(digits, work / f"train-{seed}-{n}", new, picks)
            for mode, options in modes.items():
                run = work / f"run-{seed}-{n}-{mode.replace(' ', '_').replace(',', '')}"
                result = train(data, run, TrainOptions(flip="none", seed=seed, val_dir=str(val), **options), verbose=0)
                results[(mode, n)].append(result.metrics["val_accuracy"])
                keras.backend.clear_session()
        print(f"seed {seed} done", flush=True)

    print(f"\ndigits 5-9, validation accuracy on {VAL_PER_CLASS} images per class, mean +- sd over {args.seeds} seeds")
    print(f"{'images per class':>26}" + "".join(f"{n:>16}" for n in shots))
    for mode in modes:
        cells = []
        for n in shots:
            values = results[(mode, n)]
            cells.append(mean_sd(values))
        print(f"{mode:>26}" + "".join(f"{c:>16}" for c in cells))

    if HYMENOPTERA.is_dir():
        times = []
        for attempt in ("first", "second"):
            started = time.perf_counter()
            train(HYMENOPTERA / "train", work / f"cache-{attempt}", TrainOptions(
                backbone="resnet50", weights="none", head="logistic", val_dir=str(HYMENOPTERA / "val"), seed=0,
            ), verbose=0)
            times.append(time.perf_counter() - started)
            keras.backend.clear_session()
        print(f"\nfeature cache: resnet50 --weights none --head logistic on hymenoptera train/val: first run "
              f"{times[0]:.1f} s, second (features from the cache) {times[1]:.1f} s: ratio {times[1] / times[0]:.3f} (target <= 0.2)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
