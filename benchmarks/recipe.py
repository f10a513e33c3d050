"""The small-data recipe, measured: frozen-stage features, schedules per stage, label smoothing and
mixing, and the default recipe before and after; validation accuracy at each configuration's best
validation epoch (the same rule for every row, optimistic for all; the recipe on real pretrained
features is chosen on a test split by benchmarks/real_features.py).

    .venv/bin/python benchmarks/recipe.py [--seeds 3] [--only frozen,schedule,regularize,default] [--out DIR]

Three tasks, all offline:
- `digits`: LeNet-5 trained on scikit-learn's digits 0-4 (the source run, 20 epochs), its
  convolutional layers frozen under a new head for digits 5-9 with 20 training images per class
  and 30 validation images per class (`--weights SOURCE`): a small transfer problem with a
  backbone that has learned something. Fine-tuning uses it too.
- `hymenoptera`: `../shared/data/hymenoptera` train/val, ResNet50 `--weights none` (its random
  initialization: no ImageNet weights can be downloaded here) at `--image-size 96`.
- `shapes`: the built-in `shapes` dataset, LeNet-5 from scratch (20 epochs).

Each configuration trains with `transfer.training.train` for every seed (the seed sets the
initialization, shuffling, augmentation and, for shapes, the split) and reports the validation
accuracy of the published run (mean and sample standard deviation over the seeds) and the wall time
of training (mean; each run starts with an empty feature cache). Rows are written to `OUT/recipe.csv` as they finish. `default` compares the
recipe before this release (`BEFORE`) with the defaults now, on every task.
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
from common import HYMENOPTERA, mean_sd
TRAIN_PER_CLASS, VAL_PER_CLASS = 20, 30
#: The recipe before `lr-find`, schedules and mixing came in: cosine decay, the frozen stage augmented
#: in the loop. Every experiment but `default` changes one thing from it.
BEFORE = dict(schedule="cosine", finetune_schedule="cosine", label_smoothing=0.0, mixup=0.0, cutmix=0.0, cached_views=0)
#: The defaults of `TrainOptions` now (nothing overridden).
AFTER: dict = {}
#: What each experiment's configurations change, in the order the choices were made: `frozen` starts
#: from BEFORE; `schedule` from BEFORE with the frozen stage's choice (one unaugmented cached view);
#: `regularize` from the defaults then (schedules chosen, no smoothing or mixing); `default`'s
#: configurations are whole recipes.
STARTS = {"frozen": BEFORE, "schedule": {**BEFORE, "cached_views": 1}, "regularize": {}, "default": {}}


def experiments(tasks: dict) -> dict[str, list[tuple[str, str, dict]]]:
    """Experiment -> [(task, configuration, options)]."""
    frozen = [("in loop (augmented every epoch)", {}), *[(f"cached views K={k}", {"cached_views": k}) for k in (2, 4, 8)],
              ("no augmentation (one cached view)", {"augment": False})]
    schedules = [(name, {"schedule": name}) for name in ("constant", "cosine", "onecycle")]
    return {
        "frozen": [(task, name, options) for task in ("digits", "hymenoptera") for name, options in frozen],
        "schedule": [
            *[(task, f"frozen: {name}", options) for task in ("digits", "hymenoptera") for name, options in schedules],
            *[("digits", f"finetune: {name}", {"finetune_epochs": 10, "finetune_schedule": name}) for name in ("constant", "cosine", "onecycle")],
            *[("shapes", f"scratch: {name}", options) for name, options in schedules],
        ],
        "default": [
            (task, name, options) for task in ("digits", "hymenoptera", "shapes")
            for name, options in (("before: in loop, cosine", BEFORE), ("after: this release's defaults", AFTER))
        ],
        "regularize": [
            *[(task, name, options) for task in ("digits", "shapes") for name, options in (
                ("none", {}), ("label smoothing 0.1", {"label_smoothing": 0.1}), ("mixup 0.2", {"mixup": 0.2}),
                ("cutmix 1.0", {"cutmix": 1.0}),
            )],
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="frozen,schedule,regularize,default")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import keras
    import pandas as pd

    from transfer.datasets import write_dataset
    from transfer.datasets.digits import materialize
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    work = Path(tempfile.mkdtemp(prefix="transfer-recipe-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    digits = materialize(work / "digits")
    old, new = [str(d) for d in range(5)], [str(d) for d in range(5, 10)]
    files = {d: sorted(p.name for p in (digits / d).iterdir()) for d in old + new}

    def subset(destination: Path, classes, picks) -> Path:
        for digit in classes:
            (destination / digit).mkdir(parents=True)
            for name in picks[digit]:
                shutil.copy(digits / digit / name, destination / digit / name)
        return destination

    started = time.perf_counter()
    source = train(subset(work / "source", old, files), work / "source-run",
                   TrainOptions(backbone="lenet", epochs=20, flip="none", seed=0), verbose=0)
    print(f"source: LeNet-5 on digits 0-4, val_accuracy {source.metrics['val_accuracy']:.3f}, "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    keras.backend.clear_session()
    digits_val = subset(work / "digits-val", new, {d: files[d][:VAL_PER_CLASS] for d in new})
    digits_train = subset(work / "digits-train", new, {d: files[d][VAL_PER_CLASS:VAL_PER_CLASS + TRAIN_PER_CLASS] for d in new})
    shapes = write_dataset("shapes", work / "shapes")
    tasks = {
        "digits": (digits_train, dict(weights=str(source.run_dir), flip="none", val_dir=str(digits_val))),
        "hymenoptera": (HYMENOPTERA / "train", dict(backbone="resnet50", weights="none", image_size=96,
                                                    val_dir=str(HYMENOPTERA / "val"))),
        "shapes": (shapes, dict(backbone="lenet", epochs=20)),
    }
    rows = []
    chosen = [name.strip() for name in args.only.split(",")]
    for experiment, configurations in experiments(tasks).items():
        if experiment not in chosen:
            continue
        for task, name, options in configurations:
            if task == "hymenoptera" and not HYMENOPTERA.is_dir():
                continue
            data, base = tasks[task]
            for seed in range(args.seeds):
                run = work / "runs" / f"{experiment}-{task}-{len(rows)}"
                started = time.perf_counter()
                settings = {**base, **STARTS[experiment], **options, "seed": seed, "cache_dir": str(work / "caches" / run.name)}
                result = train(data, run, TrainOptions(**settings), verbose=0)  # a cold feature cache: no run helps another
                rows.append({
                    "experiment": experiment, "task": task, "configuration": name, "seed": seed,
                    "val_accuracy": result.metrics["val_accuracy"], "val_loss": result.metrics["val_loss"],
                    "seconds": time.perf_counter() - started, "epochs_run": result.metrics["epochs_run"],
                })
                keras.backend.clear_session()
                shutil.rmtree(run)
                pd.DataFrame(rows).to_csv(out / "recipe.csv", index=False)
            done = [r for r in rows if r["experiment"] == experiment and r["task"] == task and r["configuration"] == name]
            print(summary_line(done), flush=True)
    print(f"\nvalidation accuracy, mean +- sd over {args.seeds} seeds; seconds: mean wall time of `train`")
    for experiment in chosen:
        print(f"\n## {experiment}")
        for (task, name), group in pd.DataFrame(rows).query("experiment == @experiment").groupby(["task", "configuration"], sort=False):
            print(summary_line(group.to_dict("records")))
    print(f"\nrows: {out / 'recipe.csv'}")


def summary_line(rows: list[dict]) -> str:
    accuracy = [r["val_accuracy"] for r in rows]
    seconds = statistics.mean(r["seconds"] for r in rows)
    return (f"| {rows[0]['task']} | {rows[0]['configuration']} | {mean_sd(accuracy)} | "
            f"{seconds:.1f} s | {statistics.mean(r['epochs_run'] for r in rows):.1f} |")


if __name__ == "__main__":
    main()
