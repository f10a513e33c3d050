"""Results a person looks at: training curves as CSV and PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HISTORY_COLUMNS = ["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]


def history_frame(stage: str, first_epoch: int, history: dict[str, list[float]]) -> pd.DataFrame:
    """One row per epoch of a Keras `History.history`, labelled with its stage (1-based epochs)."""
    frame = pd.DataFrame(history)
    frame.insert(0, "epoch", range(first_epoch + 1, first_epoch + 1 + len(frame)))
    frame.insert(0, "stage", stage)
    return frame.reindex(columns=HISTORY_COLUMNS)


def plot_curves(history: pd.DataFrame, path: Path) -> None:
    """Loss and accuracy, train and validation, over both stages, the stage boundary marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(history["epoch"], history[metric], marker="o", label=f"train {metric}")
        axis.plot(history["epoch"], history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        for stage, rows in history.groupby("stage", sort=False):
            if rows.index[0] > 0:
                boundary = rows["epoch"].iloc[0] - 0.5
                axis.axvline(boundary, color="grey", linestyle="--")
                axis.annotate(f"{stage} starts", (boundary, 0.98), xycoords=("data", "axes fraction"),
                              ha="left", va="top", fontsize=8, color="grey")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.savefig(path, dpi=100)
    plt.close(figure)
