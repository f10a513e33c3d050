"""scikit-learn's bundled handwritten digits (1,797 images, 10 classes) as PNG class folders.

The 8x8 images (UCI "Optical Recognition of Handwritten Digits", 16 gray levels) are scaled to
0-255 and enlarged to 32x32 with bilinear resampling, the input size of LeNet-5. Class folders
are named `0` ... `9`, so sorted class order is digit order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32


def materialize(out_dir: Path, per_class: int | None = None) -> Path:
    """Writes `out_dir/<digit>/<index>.png` and returns `out_dir`.

    Args:
        out_dir: created if missing; existing PNGs of the same names are rewritten identically.
        per_class: keep only the first `per_class` images of each digit (all when `None`).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    out_dir = Path(out_dir)
    kept = {digit: 0 for digit in range(10)}
    for index, (pixels, digit) in enumerate(zip(digits.images, digits.target)):
        digit = int(digit)
        if per_class is not None and kept[digit] >= per_class:
            continue
        kept[digit] += 1
        folder = out_dir / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        gray = np.round(pixels * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(gray, mode="L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        image.save(folder / f"{index:04d}.png")
    return out_dir
