"""The report's section on images outside the classes: the run's open-set detector, its threshold and
the novelty scores it was set on, beside a test folder's and `--unknown-dir`'s where given."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from transfer.outputs import artifacts
from transfer.outputs.figures import plot_novelty
from transfer.reports import pages

#: What the section's figure calls each set of images.
SETS = {"held_out": "training images, held out (set the threshold)", "in_class": "test images", "other": "outside the classes (--unknown-dir)"}


def novelty_section(run: artifacts.Run, tested, scratch: Path) -> str:
    """The section's HTML, or "" where the run recorded no detector (`tested`: the report's test
    evaluation, `None` without `--test`)."""
    detector = run.detector()
    if detector is None:
        reason = (run.config().get("unknown_detector") or {}).get("reason")
        return pages.section("Images outside the classes", f"<p>No open-set detector was recorded ({html.escape(reason)}).</p>") if reason else ""
    held_out = pd.DataFrame({"path": "", "novelty": detector.held_out_scores, "set": "held_out"})
    unknown = tested.evaluation.unknown if tested is not None and tested.evaluation.unknown is not None else pd.DataFrame(columns=["set"])
    table = pd.concat([held_out, unknown.drop(columns="unknown", errors="ignore")], ignore_index=True)
    table = table.assign(unknown=table["novelty"].astype(float) > detector.threshold, set=table["set"].map(SETS))
    summary = {"unknown_threshold": detector.threshold, **({k: v for k, v in tested.evaluation.summary.items() if k == "unknown_auroc"}
                                                         if tested is not None else {})}
    plot_novelty(table, summary, scratch / "novelty.png")
    text = (f"<p>Beyond a novelty score of {detector.threshold:.4g} ({html.escape(detector.method)}: "
            + ("the distance of an image's features to its nearest training image" if detector.method == "knn" else
               "the Mahalanobis distance of its features to the nearest class")
            + f"), an image is answered <b>unknown</b> by predict, evaluate, the server and every export. The threshold was set "
            f"on held-out folds of the {len(detector.held_out_scores)} training images to answer {detector.share:.0%} of them unknown "
            f"(measured: {np.mean(detector.held_out_scores > detector.threshold):.1%}).</p>")
    if tested is not None and tested.evaluation.unknown is not None:
        s = tested.evaluation.summary
        text += f"<p>Test images answered unknown: {s['in_class_unknown']:.1%}."
        text += (f" Images outside the classes answered unknown: {s['other_unknown']:.1%} of {s['num_other']} (AUROC "
                 f"{s['unknown_auroc']:.3f}).</p>" if "unknown_auroc" in s else
                 " Pass --unknown-dir FOLDER (photos of other things) to see how it separates them.</p>")
    return pages.section("Images outside the classes", text + pages.image(scratch / "novelty.png", "novelty scores"))
