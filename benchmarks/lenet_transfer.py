"""LeNet-5 reused as a backbone for shapes it has not seen: frozen (dense and logistic heads) and
fine-tuned at the previous default rate (lr/10) and at the new one (the head's rate), against
LeNet-5 from scratch; test accuracy on images that chose nothing, each run at the epoch it kept.

    .venv/bin/python benchmarks/lenet_transfer.py [--seeds 5]

Offline, from the built-in `shapes` generator. The source run: LeNet-5 on the 4 original shapes
(circle, cross, square, triangle), 400 images each (seed 0), `--epochs 30`. The target: the 3 new
shapes (`shapes.NEW_CLASSES`: pentagon, ring, star): a fixed test set of 100 per class (generator
seed 2) that chooses nothing, and a pool of 100 per class (generator seed 1) from which each seed
draws 10 train + 10 validation images per class. Each row is `transfer train` (through
`transfer.training.train`) on that seed's train/val with the row's flags and `--seed SEED`, scored by
`transfer evaluate RUN TEST` (`transfer.evaluation.evaluate.evaluate_folder`) at the epoch the run kept (its
best validation epoch). Prints, per row, test accuracy (mean +- sd over seeds), the stages the runs
kept, and the mean wall seconds of `train`; then whether the new default's fine-tuned mean is at or
above scratch. Everything, the feature cache included (`XDG_CACHE_HOME`), lives in a temporary
folder, so the cache starts cold and is private to this run (rows after the first on a seed may
reuse the features an earlier row cached).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from common import mean_sd  # noqa: E402  (also puts the checkout on the import path)
SOURCE_PER_CLASS, POOL_PER_CLASS, TEST_PER_CLASS = 400, 100, 100
TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 10

# (row, the flags after `transfer train TRAIN --val-dir VAL`, TrainOptions); SRC is the source run.
ROWS = [
    ("scratch", "--backbone lenet --epochs 30", dict(backbone="lenet", epochs=30)),
    ("frozen, dense head", "--weights SRC --head dense --epochs 30", dict(weights="SRC", head="dense", epochs=30)),
    ("frozen, logistic head (the default)", "--weights SRC", dict(weights="SRC")),
    ("dense, fine-tuned at the previous default (lr/10)", "--weights SRC --head dense --epochs 30 --finetune-epochs 20 --finetune-lr 1e-4",
     dict(weights="SRC", head="dense", epochs=30, finetune_epochs=20, finetune_lr=1e-4)),
    ("dense, fine-tuned at the new default (lr)", "--weights SRC --head dense --epochs 30 --finetune-epochs 20",
     dict(weights="SRC", head="dense", epochs=30, finetune_epochs=20)),
    ("logistic, fine-tuned at the new default (LP-FT; the default with --finetune-epochs)", "--weights SRC --finetune-epochs 20",
     dict(weights="SRC", finetune_epochs=20)),
]


def draw_split(pool: Path, out: Path, seed: int) -> tuple[Path, Path]:
    """`out/{train,val}/<shape>`: 10 + 10 images per class of `pool`, chosen by `seed`."""
    import numpy as np

    rng = np.random.default_rng(1000 + seed)
    for shape in sorted(p.name for p in pool.iterdir()):
        files = sorted((pool / shape).iterdir())
        pick = rng.choice(len(files), TRAIN_PER_CLASS + VAL_PER_CLASS, replace=False)
        for part, chosen in (("train", pick[:TRAIN_PER_CLASS]), ("val", pick[TRAIN_PER_CLASS:])):
            (out / part / shape).mkdir(parents=True, exist_ok=True)
            for i in chosen:
                shutil.copy(files[i], out / part / shape / files[i].name)
    return out / "train", out / "val"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")

    import keras

    from transfer.datasets.shapes import NEW_CLASSES, materialize
    from transfer.evaluation.evaluate import evaluate_folder
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    begun = time.perf_counter()
    source_data = materialize(work / "source", per_class=SOURCE_PER_CLASS, seed=0)
    pool = materialize(work / "pool", per_class=POOL_PER_CLASS, seed=1, classes=NEW_CLASSES)
    test = materialize(work / "test", per_class=TEST_PER_CLASS, seed=2, classes=NEW_CLASSES)
    started = time.perf_counter()
    source = train(source_data, work / "source-run", TrainOptions(backbone="lenet", epochs=30, seed=0), verbose=0)
    print(f"source: LeNet-5 on 4 shapes x {SOURCE_PER_CLASS} ({source.metrics['num_train']} train images), "
          f"val_accuracy {source.metrics['val_accuracy']:.3f}, {time.perf_counter() - started:.0f} s", flush=True)
    keras.backend.clear_session()

    accuracy = {name: [] for name, _, _ in ROWS}
    seconds = {name: [] for name, _, _ in ROWS}
    kept = {name: [] for name, _, _ in ROWS}
    for seed in range(args.seeds):
        train_dir, val_dir = draw_split(pool, work / f"split-{seed}", seed)
        for index, (name, _, options) in enumerate(ROWS):
            options = {**options, **({"weights": str(source.run_dir)} if options.get("weights") == "SRC" else {})}
            run = work / f"run-{seed}-{index}"
            started = time.perf_counter()
            result = train(train_dir, run, TrainOptions(**options, val_dir=str(val_dir), seed=seed), verbose=0)
            seconds[name].append(time.perf_counter() - started)
            evaluation, _ = evaluate_folder(run, test)
            accuracy[name].append(evaluation.summary["accuracy"])
            kept[name].append(result.metrics["best_stage"])
            keras.backend.clear_session()
        print(f"seed {seed} done", flush=True)

    print(f"\nLeNet-5 source run (4 shapes) reused for {', '.join(NEW_CLASSES)}: {TRAIN_PER_CLASS} train + "
          f"{VAL_PER_CLASS} val images per class; test accuracy on {TEST_PER_CLASS} per class that chose "
          f"nothing, mean +- sd over {args.seeds} seeds\n")
    print("| row | `transfer train` flags | test accuracy | stage kept | wall s |")
    print("|---|---|---|---|---|")
    for name, flags, _ in ROWS:
        stages = ", ".join(f"{s} x{kept[name].count(s)}" for s in dict.fromkeys(kept[name]))
        print(f"| {name} | `{flags}` | {mean_sd(accuracy[name])} | "
              f"{stages} | {statistics.mean(seconds[name]):.1f} |")
    new, scratch = statistics.mean(accuracy[ROWS[-1][0]]), statistics.mean(accuracy["scratch"])
    print(f"\nnew default fine-tuned mean {new:.3f} is {'at or above' if new >= scratch else 'below'} scratch "
          f"{scratch:.3f} ({new - scratch:+.3f})")
    print(f"total {time.perf_counter() - begun:.0f} s")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
