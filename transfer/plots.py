"""Results a person looks at, as PNG: training curves, confusion matrices, image grids, leaderboards.

Every figure is drawn with matplotlib's Agg backend (no display needed) and closed after saving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: pd.DataFrame, path: Path) -> None:
    """Loss and accuracy, train and validation, and the learning rate at each epoch's end (log
    scale), over both stages, the stage boundary marked."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()

    figure, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for axis, metric in zip(axes, ("loss", "accuracy", "learning_rate")):
        if metric == "learning_rate":
            rates = pd.to_numeric(history[metric], errors="coerce")
            axis.plot(history["epoch"], rates, marker="o", label="learning rate (end of epoch)")
            if (rates > 0).any():
                axis.set_yscale("log")
        else:
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
        axis.set_title(metric.replace("_", " "))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion_matrix(confusion: pd.DataFrame, path: Path) -> None:
    """Counts with true classes as rows and predicted classes as columns, each cell annotated."""
    plt = _pyplot()
    n = len(confusion)
    side = min(max(4.0, 0.6 * n + 2), 20)
    figure, axis = plt.subplots(figsize=(side + 1, side), constrained_layout=True)
    counts = confusion.to_numpy()
    image = axis.imshow(counts, cmap="Blues", vmin=0, vmax=max(1, counts.max()))  # the scale starts at 0 counts
    figure.colorbar(image, ax=axis, shrink=0.8)
    axis.set_xticks(range(n), confusion.columns, rotation=45, ha="right")
    axis.set_yticks(range(n), confusion.index)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if n <= 30:
        for (i, j), colour in np.ndenumerate(cell_text_colours(counts, image)):
            axis.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color=colour)
    axis.set_title("confusion matrix")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def cell_text_colours(values: np.ndarray, image) -> np.ndarray:
    """`"white"` or `"black"` for the text on each cell of `image` (a matplotlib `AxesImage`): white
    on a cell whose colour, on the image's own scale and colour map, is dark."""
    rgba = image.cmap(image.norm(values))
    luminance = 0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]
    return np.where(luminance < 0.5, "white", "black")


def plot_image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: Path, *, columns: int = 8,
                    cmap: str | None = None, title: str | None = None, size: float = 1.6) -> None:
    """Images (`[H, W]` or `[H, W, 3]`, values in [0, 1]) in a grid, each with a small title."""
    plt = _pyplot()
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size + (0.4 if title else 0)),
                                squeeze=False, constrained_layout=True)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, text in zip(axes.flat, images, titles):
        axis.imshow(np.clip(image, 0, 1), cmap=cmap, interpolation="nearest")
        axis.set_title(text, fontsize=7)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_leaderboard(leaderboard: pd.DataFrame, path: Path) -> None:
    """Validation accuracy per backbone, best first; failed runs shown with their reason."""
    plt = _pyplot()
    rows = leaderboard.iloc[::-1]
    figure, axis = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5), constrained_layout=True)
    labels = [f"{r.backbone} ({r.mode})" for r in rows.itertuples()]
    multi = leaderboard.attrs.get("rank_by") == "val_map"  # multi-label: ranked by mean average precision
    score = rows["val_map" if multi else "val_accuracy"].astype(float).fillna(0).to_numpy()
    bars = axis.barh(labels, score, color=["#c44" if isinstance(e, str) and e else "#4a7" for e in rows["error"]])
    for bar, row in zip(bars, rows.itertuples()):
        text = f"failed: {row.error[:70]}" if isinstance(row.error, str) and row.error else (
            f"{row.val_map:.3f}  (exact label sets {row.val_accuracy:.3f}, {row.train_seconds:.0f} s)" if multi else
            f"{row.val_accuracy:.3f}  (top-3 {row.top3_accuracy:.3f}, {row.train_seconds:.0f} s)"
        )
        axis.text(max(bar.get_width(), 0) + 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    axis.set_xlim(0, 1.45)
    axis.set_xlabel("validation mean average precision" if multi else "validation accuracy")
    axis.set_title("leaderboard")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_lr_find(table: pd.DataFrame, suggestion: float, path: Path, *, title: str) -> None:
    """A learning-rate sweep: each batch's loss and the smoothed loss against the rate (log axis),
    the suggested rate marked."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    axis.plot(table["learning_rate"], table["loss"], color="#bbb", linewidth=1, label="loss of the batch")
    axis.plot(table["learning_rate"], table["smoothed_loss"], color="#2a6", linewidth=2, label="smoothed loss")
    at = table.iloc[(table["learning_rate"] - suggestion).abs().argmin()]
    axis.axvline(suggestion, color="#c44", linestyle="--")
    axis.plot([suggestion], [at["smoothed_loss"]], "o", color="#c44", label=f"suggested --lr {suggestion:.2g}")
    axis.set_xscale("log")
    low, first = table["smoothed_loss"].min(), table["smoothed_loss"].iloc[0]
    if np.isfinite(low) and np.isfinite(first):  # from the minimum to a little above where it started
        span = max(first - low, 0.05 * abs(first), 1e-3)
        axis.set_ylim(low - 0.2 * span, first + 1.5 * span)
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("training loss")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_cross_validation(table: pd.DataFrame, path: Path, metric: str = "accuracy") -> None:
    """Held-out accuracy (or `metric`) of each fold (dots) and its mean +- standard deviation (bar)
    per backbone; failed folds are counted in the label."""
    plt = _pyplot()
    names = list(dict.fromkeys(table["backbone"]))
    figure, axis = plt.subplots(figsize=(8, 0.8 * len(names) + 1.8), constrained_layout=True)
    for y, name in enumerate(names):
        rows = table[table["backbone"] == name]
        ok = rows[~rows["error"].astype(bool)]
        values = ok[metric].astype(float).to_numpy()
        axis.scatter(values, np.full(len(values), y), color="#4a7", zorder=3)
        if len(values):
            sd = values.std(ddof=1) if len(values) > 1 else 0.0
            axis.errorbar([values.mean()], [y], xerr=[sd], fmt="|", color="black", markersize=18, capsize=6, zorder=4)
            axis.annotate(f"{values.mean():.3f} +- {sd:.3f}", (values.mean(), y + 0.25), ha="center", fontsize=8)
    failed = {name: int(table[(table["backbone"] == name)]["error"].astype(bool).sum()) for name in names}
    axis.set_yticks(range(len(names)), [f"{name}" + (f" ({failed[name]} failed)" if failed[name] else "") for name in names])
    axis.set_ylim(-0.7, len(names) - 0.3)
    axis.set_xlim(0, 1.02)
    axis.set_xlabel(f"held-out {metric.replace('_', ' ')} per fold (mean +- sd)")
    axis.set_title(f"{table['fold'].max()}-fold cross-validation")
    axis.grid(alpha=0.3, axis="x")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_reliability(rows: list[dict], path: Path, *, title: str = "reliability") -> None:
    """A reliability diagram: each confidence bin's accuracy as a bar against the diagonal (perfect
    calibration), its image count written on it (`transfer.calibration.reliability` rows)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 5), constrained_layout=True)
    filled = [row for row in rows if row["count"]]
    width = rows[0]["upper"] - rows[0]["lower"]
    axis.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="calibrated")
    axis.bar([row["lower"] for row in filled], [row["accuracy"] for row in filled], width=width, align="edge",
             color="#4c72b0", edgecolor="white", label="accuracy in the bin")
    axis.scatter([row["confidence"] for row in filled], [row["confidence"] for row in filled], color="#dd8452",
                 zorder=3, s=14, label="mean confidence in the bin")
    for row in filled:
        axis.text(row["lower"] + width / 2, min(row["accuracy"] + 0.02, 0.97), str(row["count"]), ha="center", fontsize=7)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("top-1 confidence")
    axis.set_ylabel("accuracy")
    axis.legend(loc="upper left", fontsize=8)
    axis.set_title(title)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_precision_recall(evaluation, path: Path) -> None:
    """Each label's precision-recall curve (scikit-learn's) from a multi-label evaluation, with its
    average precision in the legend and its threshold's operating point marked."""
    from sklearn.metrics import precision_recall_curve

    from transfer.multilabel import multi_hot
    from transfer.multilabel import decide

    plt = _pyplot()
    targets = multi_hot(evaluation.examples["label"], evaluation.class_names)
    thresholds = evaluation.per_class["threshold"].reindex(evaluation.class_names).to_numpy(dtype=float)
    chosen = decide(evaluation.scores, thresholds)
    figure, axis = plt.subplots(figsize=(6, 5), constrained_layout=True)
    for j, name in enumerate(evaluation.class_names):
        if not targets[:, j].any():
            continue
        precision, recall, _ = precision_recall_curve(targets[:, j], evaluation.scores[:, j])
        ap = evaluation.per_class.loc[name, "average_precision"]
        line, = axis.step(recall, precision, where="post", label=f"{name} (AP {ap:.2f})")
        hits = (chosen[:, j] & (targets[:, j] == 1)).sum()
        axis.scatter([hits / targets[:, j].sum()], [hits / max(chosen[:, j].sum(), 1)], color=line.get_color(), zorder=3, s=20)
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title(f"precision-recall per label (dots: the thresholds); mAP {evaluation.summary['mean_average_precision']:.3f}")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_probe(table: pd.DataFrame, path: Path) -> None:
    """Each backbone's linear-probe accuracy (mean +- sd over folds), best first, its LogME written
    beside it; a backbone that could not be probed is shown with its reason."""
    plt = _pyplot()
    rows = table.iloc[::-1]
    figure, axis = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.6), constrained_layout=True)
    failed = rows["error"].astype(bool).to_numpy()
    accuracy = rows["accuracy"].astype(float).fillna(0).to_numpy()
    spread = rows["accuracy_sd"].astype(float).fillna(0).to_numpy()
    axis.barh(rows["backbone"].map(_short_name), accuracy, xerr=spread, color=["#c44" if f else "#4a7" for f in failed], capsize=3)
    for y, row in enumerate(rows.itertuples()):
        text = f"failed: {row.error[:70]}" if row.error else f"{row.accuracy:.3f} +- {row.accuracy_sd:.3f}  (LogME {row.log_me:.3f})"
        axis.text((0 if row.error else row.accuracy + row.accuracy_sd) + 0.01, y, text, va="center", fontsize=8)
    axis.set_xlim(0, 1.45)
    axis.set_xlabel("linear-probe accuracy on frozen features (cross-validated; not the fine-tuned result)")
    axis.set_title("probe: backbones ranked")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_curve(curve: pd.DataFrame, path: Path) -> None:
    """Held-out accuracy against training images per class (log axis), mean +- sd over draws, a line per backbone."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for name, rows in curve.groupby("backbone", sort=False):
        stats = rows.groupby("per_class")["accuracy"].agg(["mean", "std"]).fillna(0)
        axis.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=_short_name(name))
    axis.set_xscale("log")
    axis.set_xlabel("training images per class (nested, stratified subsets)")
    axis.set_ylabel("held-out accuracy (mean +- sd over draws)")
    axis.set_title("would more images help? (linear probe on frozen features)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _short_name(name: str) -> str:
    return Path(name).stem if name.endswith(".keras") else name
