"""LeNet-5 from scratch on small data, `transfer train`'s recipe against a plain Keras loop: both keep
their best validation epoch, both are scored on test images that chose nothing.

    .venv/bin/python benchmarks/baselines.py [--seeds 3] [--epochs 30] [--plain-epochs 100]

For each seed, the built-in `shapes` set (4 classes of coloured shapes on noisy backgrounds, 50
images each, 64x64, drawn from that seed) is split once by `transfer train` (20% of each class for
validation), and a test set of 50 more images per class is drawn from another seed. On that split:
`transfer train --backbone lenet --epochs E` with its defaults (it keeps the epoch with the best
validation score), and a plain Keras loop over the same LeNet-5 (the same decoder and
preprocessing, Adam at 1e-3, batch 32, no augmentation) for the plain number of epochs, keeping the
weights of its best validation-accuracy epoch (the same selection rule). Both are scored on the
test images. Prints test accuracy per seed, and the mean and standard deviation.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from common import mean_sd  # noqa: E402  (also puts the checkout on the import path)


def plain_keras(run_dir: Path, test_dir: Path, epochs: int, seed: int) -> float:
    """Test accuracy of the plain loop at its best validation epoch."""
    import keras
    import numpy as np

    from transfer.outputs import artifacts
    from transfer.models.baselines import lenet
    from transfer.data.folders import iter_decoded_batches
    from transfer.data.preprocessing import Preprocess

    split = artifacts.Run.open(run_dir).split()
    labels = sorted(split["label"].unique())

    def arrays(rows):
        pixels = np.concatenate([b.pixels for b in iter_decoded_batches(rows["path"].tolist(), 32, 32)])
        return pixels, rows["label"].map(labels.index).to_numpy()

    (x, y), (vx, vy) = arrays(split[split["split"] == "train"]), arrays(split[split["split"] == "val"])
    tx, ty = arrays(test_rows(test_dir))
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((32, 32, 3)), Preprocess("tf", grayscale=True), lenet((32, 32, 1), len(labels))])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=epochs, restore_best_weights=True)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True, validation_data=(vx, vy), callbacks=[best])
    return float(model.evaluate(tx, ty, verbose=0)[1])


def test_rows(test_dir: Path):
    from transfer.data.sources import list_folder

    return list_folder(test_dir).files[["path", "label"]]


def transfer_test_accuracy(run_dir: Path, test_dir: Path) -> float:
    from transfer.evaluation.evaluate import evaluate

    return evaluate(run_dir, test_rows(test_dir)).summary["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--plain-epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=None, help="transfer train's --lr (default: its own)")
    args = parser.parse_args()

    from transfer.datasets.shapes import materialize
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    ours, plain = [], []
    print("shapes, 4 classes x 50 images; LeNet-5; test accuracy (200 images that chose nothing) per seed, each side at its best validation epoch")
    print(f"{'seed':>4}  {'transfer train, ' + str(args.epochs) + ' epochs':>28}  {'plain Keras loop, ' + str(args.plain_epochs) + ' epochs':>30}")
    with tempfile.TemporaryDirectory() as work:
        for seed in range(args.seeds):
            data = materialize(Path(work) / f"shapes-{seed}", seed=seed)
            test = materialize(Path(work) / f"test-{seed}", seed=1000 + seed)
            started = time.perf_counter()
            result = train(data, Path(work) / f"run-{seed}", TrainOptions(backbone="lenet", epochs=args.epochs, seed=seed, **({"lr": args.lr} if args.lr else {})), verbose=0)
            seconds = time.perf_counter() - started
            ours.append(transfer_test_accuracy(result.run_dir, test))
            started = time.perf_counter()
            plain.append(plain_keras(result.run_dir, test, args.plain_epochs, seed))
            plain_seconds = time.perf_counter() - started
            print(f"{seed:>4}  {ours[-1]:>20.3f} ({seconds:4.0f} s)  {plain[-1]:>22.3f} ({plain_seconds:4.0f} s)", flush=True)
    print(f"mean  {mean_sd(ours):>28}  {mean_sd(plain):>30}")


if __name__ == "__main__":
    main()
