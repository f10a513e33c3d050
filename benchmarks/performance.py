"""Performance benchmark: prints measured numbers, all taken in one run on this machine.

1. Frozen-stage training, 10 epochs of `resnet50 --weights none` on ../shared/data/hymenoptera
   (train, validated on val): cached backbone features versus the backbone in the loop. The cache
   is a fresh folder of the benchmark's own, so the cached side pays for its one backbone pass.
2. `transfer predict` throughput on hymenoptera/val versus the bare model's forward pass on the
   same images already decoded in memory.
3. Peak memory (RSS) of `transfer predict` over hymenoptera/val and over 10 copies of it.

Run: .venv/bin/python benchmarks/performance.py   (about 12 minutes on 2 CPU cores)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from common import HYMENOPTERA as DATA, machine
EPOCHS = 10


def frozen_stage(work: Path) -> dict[str, Path]:
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    runs = {}
    print(f"1. Frozen stage, resnet50 --weights none, 224x224, {EPOCHS} epochs, no early stop")
    for cache in (True, False):
        options = TrainOptions(
            backbone="resnet50", weights="none", epochs=EPOCHS, augment=False, patience=EPOCHS,
            val_dir=str(DATA / "val"), cache_features=cache, seed=0, cache_dir=str(work / "feature-cache"),
        )
        result = train(DATA / "train", work / f"cache-{cache}", options, verbose=0)
        seconds = result.metrics["stage_seconds"]["frozen"]
        runs["cached" if cache else "in_loop"] = result.run_dir
        print(f"   {'cached features' if cache else 'backbone in loop'}: {seconds:8.1f} s   "
              f"val_accuracy {result.metrics['val_accuracy']:.4f}")
        runs[f"seconds_{cache}"] = seconds
    ratio = runs["seconds_True"] / runs["seconds_False"]
    print(f"   ratio cached / in loop: {ratio:.3f}   (target <= 0.25)")
    return runs


def predict_throughput(run_dir: Path) -> None:
    from transfer.data.folders import iter_decoded_batches
    from transfer.evaluation.prediction import collect_images
    from transfer.evaluation.scorers import load_scorer

    paths, _ = collect_images([DATA / "val"])
    model = load_scorer(run_dir)
    list(model.score_files(paths[:32], 32))  # warm up: trace the model once
    started = time.perf_counter()
    scored = sum(1 for _ in model.score_files(paths, 32))
    predict_rate = scored / (time.perf_counter() - started)

    pixels = np.concatenate([b.pixels for b in iter_decoded_batches(paths, model.image_size, 32)])
    started = time.perf_counter()
    for start in range(0, len(pixels), 32):
        model.model.predict_on_batch(pixels[start : start + 32])
    bare_rate = len(pixels) / (time.perf_counter() - started)
    print(f"2. Prediction on {len(paths)} val images, resnet50 224x224, batch 32 (model already loaded)")
    print(f"   transfer predict (read + decode + forward): {predict_rate:6.1f} images/s")
    print(f"   bare forward pass on decoded images:         {bare_rate:6.1f} images/s")
    print(f"   ratio: {predict_rate / bare_rate:.3f}   (target >= 0.8)")


def peak_memory(run_dir: Path, work: Path) -> None:
    big = work / "val-x10"
    for copy in range(10):
        for image in (DATA / "val").rglob("*.jpg"):
            target = big / f"copy{copy}" / image.parent.name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(image)
    transfer = Path(sys.executable).parent / "transfer"
    print("3. Peak RSS of `transfer predict RUN FOLDER --format csv` (GNU time, max resident set)")
    peaks = []
    for folder in (DATA / "val", big):
        count = sum(1 for _ in folder.rglob("*.jpg"))
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", str(transfer), "predict", str(run_dir), str(folder), "--format", "csv"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
        )
        peaks.append(int(done.stderr.strip().splitlines()[-1]) / 1024)
        print(f"   {count:5d} images: {peaks[-1]:7.0f} MiB")
    print(f"   growth at 10x the images: {peaks[1] / peaks[0] - 1:+.1%}   (target < +20%)")


def main() -> None:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = frozen_stage(work)
        predict_throughput(runs["cached"])
        peak_memory(runs["cached"], work)


if __name__ == "__main__":
    main()
