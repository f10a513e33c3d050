"""Results a person looks at: training curves as CSV and PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HISTORY_COLUMNS = ["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]


def stage_history(stage: str, csv_log: Path) -> pd.DataFrame:
    """One row per epoch of a stage from its `keras.callbacks.CSVLogger` file (1-based epochs).

    An epoch logged twice (run again after a restart) keeps its last row.
    """
    if not Path(csv_log).is_file():
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    frame = pd.read_csv(csv_log).drop_duplicates("epoch", keep="last").sort_values("epoch")
    frame["epoch"] = frame["epoch"] + 1
    frame.insert(0, "stage", stage)
    return frame.reindex(columns=HISTORY_COLUMNS).reset_index(drop=True)


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
