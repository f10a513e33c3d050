"""Built-in datasets, materialized as image folders without network access.

This folder installs as `transfer.datasets`. `RECIPES` maps a name to a function
`(out_dir: Path) -> Path` that writes the dataset in the folder layout described in
`datasets/README.md` (`shapes-multi`: images and a multi-label manifest, `labels.csv`); `write_dataset` writes one as an output of `transfer` (it owns the folder).
"""

from __future__ import annotations

from pathlib import Path

from transfer.outputs import publishing
from transfer.datasets.digits import materialize as digits
from transfer.datasets.shapes import materialize as shapes
from transfer.datasets.shapes_multi import materialize as shapes_multi
from transfer.core.errors import require

RECIPES = {"digits": digits, "shapes": shapes, "shapes-multi": shapes_multi}


def write_dataset(name: str, out_dir: Path, *, force: bool = False) -> Path:
    """Writes the built-in dataset `name` to `out_dir`, a new or empty folder (or, with `force`, an
    earlier dataset written by `transfer`), and returns `out_dir`."""
    require(name in RECIPES, "DATASET", name, " | ".join(RECIPES))
    publishing.check_destination(Path(out_dir), kind="dataset", force=force)
    with publishing.staged(Path(out_dir), "dataset") as staging:
        RECIPES[name](staging)
    return Path(out_dir)
