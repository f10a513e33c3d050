"""`transfer evaluate --unknown-dir OTHER`: how well a model's open-set detector tells its own classes'
images from images of something else.

Every image of the evaluated folder (in-class: the detector should keep it) and every image found
under OTHER (recursively; its folder names are not labels) gets the novelty score the model itself
computes (`transfer.models.detector`, in every export format). Reported (`summary`, `unknown.csv`,
`unknown.png`):

- `unknown_auroc`: the area under the ROC curve of telling OTHER's scores from the in-class ones
  (1 separates perfectly, 0.5 is chance; `transfer.metrics.novelty.auroc`), independent of the threshold;
- `other_unknown`: the share of OTHER answered `unknown` at the run's threshold;
- `in_class_unknown`: the share of the in-class images wrongly answered `unknown` (also reported
  without `--unknown-dir`, whenever the model has a detector).

OTHER holding photos of the model's own classes is allowed (it is the user's call) but said.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from transfer.core.errors import DataError, InvalidOptionError
from transfer.core.progress import Reporter

#: `unknown.csv`'s columns; `set` is `in_class` (the evaluated images) or `other` (`--unknown-dir`).
COLUMNS = ["path", "set", "novelty", "unknown"]


def other_images(folder: Path, class_names: Sequence[str], threshold: float | None, reporter: Reporter) -> tuple[list[str], list]:
    """The image files under `folder` (recursively) and the files left out with the reason; says
    where a subfolder is named after one of the model's classes.

    Raises:
        InvalidOptionError: the model has no detector (`threshold` is `None`).
        DataError: `folder` holds no image.
    """
    from transfer.evaluation.prediction import collect_images

    if threshold is None:
        raise InvalidOptionError(
            f"--unknown-dir {folder}: the model has no open-set detector (its config.json records none: trained with "
            f"--unknown off, on too few images, or before detectors); train it again to measure one."
        )
    if not Path(folder).is_dir():
        raise DataError(f"--unknown-dir {folder} is not a folder; pass a folder of photos outside the model's classes.")
    paths, skipped = collect_images([Path(folder)])
    if not paths:
        raise DataError(f"--unknown-dir {folder} holds no image file; pass a folder of photos outside the model's classes.")
    named = sorted({Path(path).parent.name for path in paths} & set(class_names))
    if named:
        reporter.warning(f"--unknown-dir {folder} has images in folders named after the model's classes ({', '.join(named)}); "
                         f"they are counted as images outside the classes, as asked.")
    return paths, skipped


def measure_unknown(in_class: pd.DataFrame, other: pd.DataFrame, threshold: float) -> dict:
    """The summary's numbers for `in_class` and `other` (`path`, `novelty` tables) at `threshold`;
    `other` may be empty (no `--unknown-dir`)."""
    from transfer.metrics.novelty import auroc

    summary = {"unknown_threshold": threshold, "in_class_unknown": float(np.mean(in_class["novelty"] > threshold))}
    if len(other):
        summary |= {"unknown_auroc": auroc(in_class["novelty"].to_numpy(), other["novelty"].to_numpy()),
                    "other_unknown": float(np.mean(other["novelty"] > threshold)), "num_other": len(other)}
    return summary


def unknown_table(in_class: pd.DataFrame, other: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """`unknown.csv`: every scored image, in-class first, its novelty and whether it is answered `unknown`."""
    table = pd.concat([in_class.assign(set="in_class"), other.assign(set="other")], ignore_index=True)
    return table.assign(unknown=table["novelty"] > threshold)[COLUMNS]
