"""Zero to three shapes per image: a small multi-label set made on the spot.

`images` 96x96 RGB PNGs in `OUT/images/`, and `OUT/labels.csv`, a multi-label manifest
(`path,labels`: the shapes in the image, sorted and separated by `;`, empty for none). Each image
holds 0, 1, 2 or 3 different shapes of `shapes.CLASSES` (circle, cross, square, triangle; in 10%, 30%,
35% and 25% of the images), each in its own quarter of the image so that none hides another, at a
random size, position, rotation and dark colour over noise around a light colour, as in the shapes
set. Each image's seed derives from `seed` and its index, so the set is the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ImageDraw

from transfer.datasets.shapes import CLASSES, _contrasting, draw_shape, noisy_background

SIZE = 96
#: How many images hold 0, 1, 2 and 3 shapes.
COUNTS = (0.10, 0.30, 0.35, 0.25)
MANIFEST = "labels.csv"


def materialize(out_dir: Path, images: int = 400, seed: int = 0) -> Path:
    """Writes `out_dir/images/<index>.png` and `out_dir/labels.csv`; returns `out_dir`."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(images):
        rng = np.random.default_rng([seed, 7, index])
        count = int(rng.choice(len(COUNTS), p=COUNTS))
        shapes = sorted(rng.choice(CLASSES, size=count, replace=False).tolist())
        image, background = noisy_background(SIZE, rng)
        draw = ImageDraw.Draw(image)
        half = SIZE / 2
        for shape, quarter in zip(shapes, rng.permutation(4)):
            radius = rng.uniform(10, 19)
            left, top = (quarter % 2) * half, (quarter // 2) * half
            cx, cy = rng.uniform(left + radius + 2, left + half - radius - 2), rng.uniform(top + radius + 2, top + half - radius - 2)
            draw_shape(draw, shape, (cx, cy, radius), _contrasting(background, rng), rng)
        name = f"images/{index:04d}.png"
        image.save(out_dir / name)
        rows.append(f"{name},{';'.join(shapes)}\n")
    (out_dir / MANIFEST).write_text("path,labels\n" + "".join(rows))
    return out_dir
