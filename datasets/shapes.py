"""Coloured shapes on noisy backgrounds: a small image-classification set made on the spot.

Four classes (`circle`, `square`, `triangle`, `cross`), `per_class` images each (50 by default), 64x64
RGB PNGs; three more (`pentagon`, `ring`, `star`, in `NEW_CLASSES`) can be asked for by `classes`, as a
target set that a model of the four has not seen. Every image draws its shape at a random size, position, rotation and colour over noise
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
NEW_CLASSES = ("pentagon", "ring", "star")
_ALL = CLASSES + NEW_CLASSES  # a shape's index here seeds its images, so no two shapes share a seed


def materialize(out_dir: Path, per_class: int = 50, seed: int = 0, classes: tuple[str, ...] = CLASSES) -> Path:
    """Writes `out_dir/<shape>/<index>.png` for each shape in `classes` (any of `CLASSES` and
    `NEW_CLASSES`) and returns `out_dir`. A shape's images depend only on `seed`, the shape and
    the index, not on which other shapes are written."""
    unknown = [shape for shape in classes if shape not in _ALL]
    if unknown:
        raise ValueError(f"Unknown shapes {unknown}; choose from {' | '.join(_ALL)}.")
    out_dir = Path(out_dir)
    for shape in classes:
        label = _ALL.index(shape)
        folder = out_dir / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            rng = np.random.default_rng([seed, label, index])
            _draw(shape, rng).save(folder / f"{index:03d}.png")
    return out_dir


def _draw(shape: str, rng: np.random.Generator) -> Image.Image:
    image, background = noisy_background(SIZE, rng)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(14, 24)
    cx, cy = rng.uniform(radius + 2, SIZE - radius - 2, 2)
    draw_shape(draw, shape, (cx, cy, radius), _contrasting(background, rng), rng)
    return image


def noisy_background(size: int, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """A `size` x `size` image of noise around a random light colour, and that colour."""
    background = rng.integers(130, 256, 3)
    noise = rng.normal(0, 25, (size, size, 3))
    return Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8)), background


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, circle: tuple[float, float, float], colour, rng: np.random.Generator) -> None:
    """Draws `shape` filling the circle `(cx, cy, radius)`, turned by a small random angle."""
    cx, cy, radius = circle
    upright = {"triangle": -math.pi / 2, "square": math.pi / 4, "pentagon": -math.pi / 2, "ring": -math.pi / 2, "star": -math.pi / 2}
    angle = rng.uniform(-0.25, 0.25) + upright.get(shape, 0.0)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius, 4, angle), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, angle), fill=colour)
    elif shape == "pentagon":
        draw.polygon(_polygon(cx, cy, radius, 5, angle), fill=colour)
    elif shape == "ring":  # a circle's outline, at least 3 pixels wide
        width = int(round(max(3, radius / 3)))
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=colour, width=width)
    elif shape == "star":  # five points, the inner corners at 0.45 of the radius
        points = [(cx + r * math.cos(angle + math.pi * k / 5), cy + r * math.sin(angle + math.pi * k / 5))
                  for k, r in enumerate([radius, radius * 0.45] * 5)]
        draw.polygon(points, fill=colour)
    else:  # a cross: two bars
        for turn in (0, math.pi / 2):
            a, b = angle + turn, angle + turn + math.pi / 2
            w = radius / 3.5
            points = [(cx + dx * math.cos(a) * radius + dy * math.cos(b) * w, cy + dx * math.sin(a) * radius + dy * math.sin(b) * w)
                      for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            draw.polygon(points, fill=colour)


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
