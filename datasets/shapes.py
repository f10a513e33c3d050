"""Coloured shapes on noisy backgrounds: a small image-classification set made on the spot.

Four classes (`circle`, `square`, `triangle`, `cross`), `per_class` images each (50 by default), 64x64
RGB PNGs. Every image draws its shape at a random size, position, rotation and colour over noise
around another random colour (a light background, a darker shape, so grayscale models see it), with a random seed per image derived from `seed`, so the set is the
same on every machine. Like the small photo sets `transfer` is for: few images, strong nuisance
variation, and a label that only the shape decides.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
CLASSES = ("circle", "cross", "square", "triangle")


def materialize(out_dir: Path, per_class: int = 50, seed: int = 0) -> Path:
    """Writes `out_dir/<shape>/<index>.png` and returns `out_dir`."""
    out_dir = Path(out_dir)
    for label, shape in enumerate(CLASSES):
        folder = out_dir / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            rng = np.random.default_rng([seed, label, index])
            _draw(shape, rng).save(folder / f"{index:03d}.png")
    return out_dir


def _draw(shape: str, rng: np.random.Generator) -> Image.Image:
    background = rng.integers(130, 256, 3)
    noise = rng.normal(0, 25, (SIZE, SIZE, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    colour = _contrasting(background, rng)
    radius = rng.uniform(14, 24)
    cx, cy = rng.uniform(radius + 2, SIZE - radius - 2, 2)
    angle = rng.uniform(-0.25, 0.25) + {"triangle": -math.pi / 2, "square": math.pi / 4}.get(shape, 0.0)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius, 4, angle), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, angle), fill=colour)
    else:  # a cross: two bars
        for turn in (0, math.pi / 2):
            a, b = angle + turn, angle + turn + math.pi / 2
            w = radius / 3.5
            points = [(cx + dx * math.cos(a) * radius + dy * math.cos(b) * w, cy + dx * math.sin(a) * radius + dy * math.sin(b) * w)
                      for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            draw.polygon(points, fill=colour)
    return image


def _luminance(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _contrasting(background: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour at least 90 darker in luminance than the (light) background, so the shape
    shows in grayscale too, as LeNet-5 sees it."""
    while True:
        colour = rng.integers(0, 256, 3)
        if _luminance(background) - _luminance(colour) >= 90:
            return tuple(int(c) for c in colour)


def _polygon(cx: float, cy: float, radius: float, corners: int, angle: float) -> list[tuple[float, float]]:
    return [(cx + radius * math.cos(angle + 2 * math.pi * k / corners), cy + radius * math.sin(angle + 2 * math.pi * k / corners))
            for k in range(corners)]
