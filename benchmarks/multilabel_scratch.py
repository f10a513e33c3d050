"""Multi-label from scratch: `transfer train`'s default recipe for LeNet-5 against a plain Keras loop,
scored by test mAP on images that chose nothing.

    nice -n 5 .venv/bin/python benchmarks/multilabel_scratch.py [--seeds 3] [--epochs 60] [--image-size 64]
        [--train-args "--augment ..."]   # an ablation: extra `transfer train` options

Data: a multi-label set made here, not `transfer dataset shapes-multi` (other seeds, another layout):
96x96 images of 0 to 3 different shapes (circle, cross, square, triangle; 15/35/30/20% of the
images), each anywhere in the image (placed by rejection so none overlaps another, radius 12 to 20
px), in a dark colour on a vertical gradient between two light colours, with noise. Per seed s: 400 training images from seed
1000 + s and 200 test images from seed 2000 + s, which choose nothing.

Per seed, on the same images:
- `transfer train --manifest train.csv --multi-label --backbone lenet --image-size SIZE --epochs E`
  with every other option at its default (its own 20% validation split chooses the epoch and each
  label's threshold), scored by `transfer.evaluation.evaluate` on the test set;
- a plain Keras loop over the same LeNet-5 (`transfer.models.baselines.lenet`, the same decoder and
  grayscale preprocessing, a sigmoid per label), trained on the run's training split: Adam at
  1e-3, binary cross-entropy, batch 32, no augmentation, the last of E epochs.
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
COUNTS = (0.15, 0.35, 0.30, 0.20)
SIZE = 96


def scattered_shapes(out_dir: Path, images: int, seed: int) -> Path:
    """Writes `out_dir/NNNN.png` and `out_dir/labels.csv` (absolute paths, `path,labels`); returns the manifest."""
    import numpy as np
    from PIL import Image, ImageDraw

    from transfer.datasets.shapes import draw_shape

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(images):
        rng = np.random.default_rng([seed, 31, index])
        top, bottom = rng.integers(150, 256, 3), rng.integers(150, 256, 3)
        ramp = np.linspace(0, 1, SIZE)[:, None, None]
        pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, 15, (SIZE, SIZE, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        count = int(rng.choice(len(COUNTS), p=COUNTS))
        shapes = sorted(rng.choice(CLASSES, size=count, replace=False).tolist())
        placed: list[tuple[float, float, float]] = []
        for shape in shapes:
            while True:
                radius = rng.uniform(12, 20)
                cx, cy = rng.uniform(radius + 1, SIZE - radius - 1, 2)
                if all(np.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                    break
            placed.append((cx, cy, radius))
            gray = rng.integers(0, 60)
            colour = tuple(int(np.clip(gray + d, 0, 255)) for d in rng.integers(-30, 31, 3))
            draw_shape(draw, shape, (cx, cy, radius), colour, rng)
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


def plain_keras(run_dir: Path, test: Path, image_size: int, epochs: int, seed: int) -> float:
    """Test mAP of the plain loop at its last epoch, trained on the run's training split."""
    import keras
    import numpy as np
    import pandas as pd
    from sklearn.metrics import average_precision_score

    from transfer.outputs import artifacts
    from transfer.models.baselines import lenet
    from transfer.data.folders import iter_decoded_batches
    from transfer.data.preprocessing import Preprocess

    split = artifacts.Run.open(run_dir).split()

    def arrays(rows):
        pixels = np.concatenate([b.pixels for b in iter_decoded_batches(rows["path"].tolist(), image_size, 32)])
        targets = np.array([[name in str(labels).split(";") for name in CLASSES] for labels in rows["label"]], "float32")
        return pixels, targets

    x, y = arrays(split[split["split"] == "train"])
    tx, ty = arrays(pd.read_csv(test, keep_default_na=False).rename(columns={"labels": "label"}))
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((image_size, image_size, 3)), Preprocess("tf", grayscale=True),
                              lenet((image_size, image_size, 1), len(CLASSES), activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    probabilities = model.predict(tx, verbose=0)
    return float(np.mean([average_precision_score(ty[:, j], probabilities[:, j]) for j in range(len(CLASSES))]))


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
    print(f"scattered shapes, 400 train / 200 test images per seed; LeNet-5 at {args.image_size} px, {args.epochs} epochs; "
          f"test mAP; transfer train options: {args.train_args or '(defaults)'}")
    print(f"{'seed':>4}  {'transfer train':>22}  {'plain Keras loop':>22}")
    ours, plain = [], []
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
            if not args.no_plain:
                started = time.perf_counter()
                plain.append(plain_keras(run, test_csv, args.image_size, args.epochs, seed))
                line += f"  {plain[-1]:>14.3f} ({time.perf_counter() - started:4.0f} s)"
            print(line, flush=True)
    print(f"mean  {mean_sd(ours):>22}  {mean_sd(plain) if plain else '-':>22}")


if __name__ == "__main__":
    main()
