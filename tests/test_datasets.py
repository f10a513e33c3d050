"""The built-in datasets: written the same on every machine, as class folders transfer reads."""

import hashlib

import numpy as np
from PIL import Image

from transfer.datasets import RECIPES, write_dataset
from transfer.datasets.shapes import CLASSES


def digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.png")))).hexdigest()


def test_shapes_are_the_same_for_a_seed_and_differ_between_seeds(tmp_path):
    first = RECIPES["shapes"](tmp_path / "a", per_class=3, seed=1)
    again = RECIPES["shapes"](tmp_path / "b", per_class=3, seed=1)
    other = RECIPES["shapes"](tmp_path / "c", per_class=3, seed=2)
    assert sorted(p.name for p in first.iterdir()) == sorted(CLASSES)
    assert digest(first) == digest(again) != digest(other)
    image = np.asarray(Image.open(first / "circle" / "000.png"))
    assert image.shape == (64, 64, 3)


def test_the_shape_is_darker_than_its_background(tmp_path):
    """Every circle covers more than 5% of its image with pixels well below the (light) median."""
    folder = RECIPES["shapes"](tmp_path / "s", per_class=5, seed=0)
    for path in sorted((folder / "circle").iterdir()):
        gray = np.asarray(Image.open(path).convert("L"), np.float32)
        dark = gray < np.median(gray) - 30
        assert dark.mean() > 0.05


def test_write_dataset_marks_its_folder(tmp_path):
    out = write_dataset("shapes", tmp_path / "shapes")
    assert (out / ".transfer.json").is_file() and len(list(out.rglob("*.png"))) == 4 * 50
