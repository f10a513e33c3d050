"""Multi-label from scratch: `transfer train`'s default recipe for LeNet-5 against plain Keras loops,
scored by test mAP on images that chose nothing.

    nice -n 5 .venv/bin/python benchmarks/multilabel_scratch.py [--seeds 3] [--epochs 60] [--image-size 64]
        [--train-args "--augment ..."]   # an ablation: extra `transfer train` options

Data: a multi-label set made here, not `transfer dataset shapes-multi` (other seeds, another layout):
96x96 images of 0 to 3 different shapes (circle, cross, square, triangle; 20/30/30/20% of the
images), each anywhere in the image (placed by rejection so none overlaps another, radius 14 to 22
px), in a saturated dark colour on a flat light background with a little noise. Per seed s: 400
training images from seed 1000 + s and 200 test images from seed 2000 + s, which choose nothing.

Per seed, on the same images:
- `transfer train --manifest train.csv --multi-label --backbone lenet --image-size SIZE --epochs E`
  with every other option at its default (its own 20% validation split chooses the epoch and each
  label's threshold), scored by `transfer.evaluation.evaluate` on the test set;
- two plain Keras loops trained on the run's training split (Adam at 1e-3, binary cross-entropy,
  batch 32, no augmentation, the last of E epochs): over the same LeNet-5 (`transfer.models.baselines.lenet`,
  the same decoder and grayscale preprocessing, a sigmoid per label), and over the "LeNet-like" CNN
  a user writes (conv 32 3x3 ReLU, max pool, conv 64 3x3 ReLU, max pool, dense 128 ReLU, sigmoids).
Prints the test mAP per seed, then mean +- sd over seeds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from common import machine, mean_sd  # noqa: E402  (also puts the checkout on the import path)

CLASSES = ("circle", "cross", "square", "triangle")
#: How many images hold 0, 1, 2 and 3 shapes (`shapes-multi`: 10/30/35/25%).
COUNTS = (0.20, 0.30, 0.30, 0.20)
SIZE = 96


def scattered_shapes(out_dir: Path, images: int, seed: int) -> Path:
    """Writes `out_dir/NNNN.png` and `out_dir/labels.csv` (absolute paths, `path,labels`); returns the manifest.

    Unlike `shapes-multi` (a shape per quarter, radius 10 to 19 px, noise of sd 25, images seeded
    `[seed, 7, index]`): shapes anywhere (by rejection, none overlapping), radius 14 to 22 px, a
    flat light background with little noise (sd 8), a saturated dark colour, seeds `[seed, 53, index]`.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    from transfer.datasets.shapes import draw_shape

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(images):
        rng = np.random.default_rng([seed, 53, index])
        background = rng.integers(170, 256, 3)
        pixels = background + rng.normal(0, 8, (SIZE, SIZE, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        count = int(rng.choice(len(COUNTS), p=COUNTS))
        shapes = sorted(rng.choice(CLASSES, size=count, replace=False).tolist())
        placed: list[tuple[float, float, float]] = []
        for shape in shapes:
            while True:
                radius = rng.uniform(14, 22)
                cx, cy = rng.uniform(radius + 1, SIZE - radius - 1, 2)
                if all(np.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                    break
            placed.append((cx, cy, radius))
            colour = [int(rng.integers(0, 50)), int(rng.integers(0, 50)), int(rng.integers(60, 140))]
            draw_shape(draw, shape, (cx, cy, radius), tuple(rng.permutation(colour).tolist()), rng)
        path = out_dir / f"{index:04d}.png"
        image.save(path)
        rows.append(f"{path},{';'.join(shapes)}\n")
    (out_dir / "labels.csv").write_text("path,labels\n" + "".join(rows))
    return out_dir / "labels.csv"


def test_map(run_dir: Path, test: Path) -> float:
    import pandas as pd

    from transfer.evaluation.evaluate import evaluate

    table = pd.read_csv(test, keep_default_na=False).rename(columns={"labels": "label"})
    return evaluate(run_dir, table).summary["mean_average_precision"]


def lenet_like(image_size: int):
    """The "LeNet-like" CNN a user writes: conv 32 3x3 ReLU, max pool, conv 64 3x3 ReLU, max pool,
    dense 128 ReLU, a sigmoid per label, on RGB scaled to [0, 1]."""
    import keras
    from keras import layers

    return keras.Sequential([keras.Input((image_size, image_size, 3)), layers.Rescaling(1 / 255),
                             layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
                             layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(),
                             layers.Flatten(), layers.Dense(128, activation="relu"),
                             layers.Dense(len(CLASSES), activation="sigmoid")])


def lenet5(image_size: int):
    """transfer's LeNet-5 (`transfer.models.baselines.lenet`: tanh, average pooling, C5's map flattened)
    behind the grayscale preprocessing `transfer train --backbone lenet` uses, a sigmoid per label."""
    import keras

    from transfer.models.baselines import lenet
    from transfer.data.preprocessing import Preprocess

    return keras.Sequential([keras.Input((image_size, image_size, 3)), Preprocess("tf", grayscale=True),
                             lenet((image_size, image_size, 1), len(CLASSES), activation="sigmoid")])


PLAIN = {"plain LeNet-5": lenet5, "plain LeNet-like": lenet_like}


def plain_keras(run_dir: Path, test: Path, image_size: int, epochs: int, seed: int) -> dict[str, float]:
    """Test mAP of each plain loop (`PLAIN`) at its last epoch, trained on the run's training split."""
    import keras
    import numpy as np
    import pandas as pd
    from sklearn.metrics import average_precision_score

    from transfer.outputs import artifacts
    from transfer.data.folders import iter_decoded_batches

    split = artifacts.Run.open(run_dir).split()

    def arrays(rows):
        pixels = np.concatenate([b.pixels for b in iter_decoded_batches(rows["path"].tolist(), image_size, 32)])
        targets = np.array([[name in str(labels).split(";") for name in CLASSES] for labels in rows["label"]], "float32")
        return pixels, targets

    x, y = arrays(split[split["split"] == "train"])
    tx, ty = arrays(pd.read_csv(test, keep_default_na=False).rename(columns={"labels": "label"}))
    scores = {}
    for name, build in PLAIN.items():
        keras.utils.set_random_seed(seed)
        model = build(image_size)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
        probabilities = model.predict(tx, verbose=0)
        scores[name] = float(np.mean([average_precision_score(ty[:, j], probabilities[:, j]) for j in range(len(CLASSES))]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-args", default="", help="extra `transfer train` options, for ablations")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain loop (ablations of transfer's side)")
    args = parser.parse_args()

    from common import cli

    print(f"Machine: {machine()}")
    print(f"scattered shapes, 400 train / 200 test images per seed; {args.image_size} px, {args.epochs} epochs; "
          f"test mAP; transfer train options: {args.train_args or '(defaults)'}")
    names = list(PLAIN) if not args.no_plain else []
    print(f"{'seed':>4}  {'transfer train':>22}" + "".join(f"  {name:>17}" for name in names))
    ours, plain = [], {name: [] for name in names}
    with tempfile.TemporaryDirectory() as work:
        for seed in range(args.seeds):
            train_csv = scattered_shapes(Path(work) / "data" / f"train-{seed}", 400, 1000 + seed)
            test_csv = scattered_shapes(Path(work) / "data" / f"test-{seed}", 200, 2000 + seed)
            run = Path(work) / "runs" / f"run-{seed}"  # outside the data folders
            started = time.perf_counter()
            cli("train", "--manifest", train_csv, "--multi-label", "--backbone", "lenet", "--image-size", args.image_size,
                "--epochs", args.epochs, "--seed", seed, "--out", run, *shlex.split(args.train_args))
            seconds = time.perf_counter() - started
            ours.append(test_map(run, test_csv))
            line = f"{seed:>4}  {ours[-1]:>14.3f} ({seconds:4.0f} s)"
            if names:
                started = time.perf_counter()
                for name, score in plain_keras(run, test_csv, args.image_size, args.epochs, seed).items():
                    plain[name].append(score)
                    line += f"  {score:>17.3f}"
                line += f"  ({time.perf_counter() - started:.0f} s both)"
            print(line, flush=True)
    print(f"mean  {mean_sd(ours):>22}" + "".join(f"  {mean_sd(plain[name]):>17}" for name in names))

if __name__ == "__main__":
    main()
