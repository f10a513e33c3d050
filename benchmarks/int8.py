"""Full-integer (int8) LiteRT exports against their Keras models: agreement, accuracy and speed.

    .venv/bin/python benchmarks/int8.py FLOWERS_DIR [--seeds 2] [--test 250]

For each dataset and seed: a run is trained, exported with `transfer export --format litert
--quantize int8` (its own check off: `min_agreement=0`, so that a refused export is measured too),
and both are scored on test images that chose nothing. Printed per seed: the Keras model's test
accuracy, the int8 file's top-1 agreement with it on all test images, on those where the Keras
model's top probability is at least 0.5 (confident) and on the others, the int8 file's test
accuracy, the Keras model's own agreement with itself when each pixel gets uniform noise of +-2
(of 0-255; a change no eye sees: how many decisions are that close), and the int8/Keras speed ratio
(same process, same images, batches of 16, after a warm-up batch).

Datasets: weak flowers (FLOWERS_DIR = TensorFlow's flower_photos with train/ and val/; EfficientNet-
Lite0, dense head, 10 photos per class to train and 10 to validate drawn from train/ per seed; test:
`--test` photos of val/), the same flowers with the default head (`flowers-default`: the logistic
head `transfer train` fits on a frozen model file, 20 photos per class to train and 10 to validate), hymenoptera (../shared; Lite0, its default head, train/ split 80/20 per
seed; test: val/) and the built-in digits (LeNet-5 from scratch as `make demo` does, 40 per class
to train and validate; test: the other digits).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import tempfile
import time
from pathlib import Path

import common
import numpy as np

from common import HYMENOPTERA, LITE0, mean_sd

IMAGES = (".jpg", ".jpeg", ".png")


def class_files(folder: Path) -> dict[str, list[str]]:
    return {d.name: sorted(str(f) for f in d.iterdir() if f.suffix.lower() in IMAGES)
            for d in sorted(folder.iterdir()) if d.is_dir()}


def manifest(file: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(file, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return file


def draw(files: dict[str, list[str]], train: int | None, val: int | None, seed: int, val_share: float = 0.2):
    """Per class: `train` + `val` files (or all, split `val_share`), and the files left over."""
    rng, rows, left = random.Random(seed), [], []
    for label, paths in files.items():
        paths = paths[:]
        rng.shuffle(paths)
        n_val = val if val is not None else int(len(paths) * val_share)
        n_train = train if train is not None else len(paths) - n_val
        rows += [(p, label, "val") for p in paths[:n_val]] + [(p, label, "train") for p in paths[n_val:n_val + n_train]]
        left += [(p, label) for p in paths[n_val + n_train:]]
    return rows, left


def measure(run: Path, out: Path, test: list[tuple[str, str]], batch: int = 16) -> dict[str, float]:
    from transfer.data.folders import iter_decoded_batches
    from transfer.deploy.export import ExportOptions, export
    from transfer.evaluation.scorers import load_scorer

    exported = export(run, out, ExportOptions(format="litert", quantize="int8", min_agreement=0.0))
    keras_scorer, int8_scorer = load_scorer(run), load_scorer(exported.path)
    count = len(test) // batch * batch
    paths, labels = [p for p, _ in test[:count]], [label for _, label in test[:count]]
    pixels = np.concatenate([b.pixels for b in iter_decoded_batches(paths, keras_scorer.image_size, 64)])
    truth = np.array([keras_scorer.labels.index(label) for label in labels])

    def timed(score):
        score(pixels[:batch])
        started = time.perf_counter()
        scores = np.concatenate([score(pixels[s:s + batch]) for s in range(0, count, batch)])
        return count / (time.perf_counter() - started), scores

    keras_speed, reference = timed(keras_scorer.score_pixels)
    int8_speed, scores = timed(int8_scorer.score_pixels)
    noisy = np.clip(pixels + np.random.default_rng(0).uniform(-2, 2, pixels.shape), 0, 255).astype(np.float32)
    jittered = np.concatenate([keras_scorer.score_pixels(noisy[s:s + batch]) for s in range(0, count, batch)])
    same, confident = scores.argmax(1) == reference.argmax(1), reference.max(1) >= 0.5
    return {"float accuracy": np.mean(reference.argmax(1) == truth), "agreement": np.mean(same),
            "confident": np.mean(same[confident]) if confident.any() else float("nan"),
            "other": np.mean(same[~confident]) if (~confident).any() else float("nan"),
            "share confident": np.mean(confident), "int8 accuracy": np.mean(scores.argmax(1) == truth),
            "float +-2 noise": np.mean(jittered.argmax(1) == reference.argmax(1)), "speed ratio": int8_speed / keras_speed,
            "export check": exported.agreement, "images": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flowers", type=Path, help="flower_photos with train/ and val/ class folders")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--test", type=int, default=250, help="flowers val/ photos to test on (a fixed draw)")
    parser.add_argument("--datasets", default="flowers,flowers-default,hymenoptera,digits")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="transfer-int8-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")

    import keras

    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    common.cli("dataset", "digits", work / "digits")
    flowers_test = [(p, label) for label, paths in class_files(args.flowers / "val").items() for p in paths]
    random.Random(0).shuffle(flowers_test)
    datasets = {
        "flowers (weak)": (lambda seed: draw(class_files(args.flowers / "train"), 10, 10, seed)[0], flowers_test[:args.test],
                           dict(backbone=str(LITE0), head="dense", epochs=10)),
        "flowers-default (weak, the default logistic head)": (
            lambda seed: draw(class_files(args.flowers / "train"), 20, 10, seed)[0], flowers_test[:args.test],
            dict(backbone=str(LITE0))),
        "hymenoptera": (lambda seed: draw(class_files(HYMENOPTERA / "train"), None, None, seed)[0],
                        [(p, label) for label, paths in class_files(HYMENOPTERA / "val").items() for p in paths],
                        dict(backbone=str(LITE0), epochs=10)),
        "digits": (lambda seed: draw(class_files(work / "digits"), 30, 10, 0)[0], draw(class_files(work / "digits"), 30, 10, 0)[1],
                   dict(backbone="lenet", epochs=20, flip="none")),
    }
    columns = ("float accuracy", "agreement", "confident", "other", "share confident", "int8 accuracy", "float +-2 noise",
               "speed ratio", "export check")
    results = {}
    for name, (rows_for, test, options) in datasets.items():
        if name.split()[0] not in args.datasets.split(","):
            continue
        for seed in range(args.seeds):
            tag = f"{name.split()[0]}-{seed}"
            data = manifest(work / f"{tag}.csv", rows_for(seed))
            train(None, work / tag, TrainOptions(**options, manifest=str(data), seed=seed), verbose=0)
            measured = measure(work / tag, work / f"{tag}-int8", test)
            results.setdefault(name, []).append(measured)
            print(f"{name} seed {seed} ({measured['images']} test images): "
                  + ", ".join(f"{c} {measured[c]:.3f}" for c in columns), flush=True)
            keras.backend.clear_session()
    print(f"\n{common.machine()}; mean +- sd over {args.seeds} seeds\n")
    print("| dataset | test images | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for name, measured in results.items():
        print(f"| {name} | {measured[0]['images']} | "
              + " | ".join(shown([m[c] for m in measured], 2 if c == "speed ratio" else 3) for c in columns) + " |")


def shown(values, digits: int) -> str:
    """mean +- sd of the seeds that have a value (`-` where none has: no image of that kind)."""
    values = [float(v) for v in values if not np.isnan(v)]
    return mean_sd(values, digits) if values else "-"


if __name__ == "__main__":
    main()
