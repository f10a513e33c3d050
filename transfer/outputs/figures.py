"""Results a person looks at, as PNG: training curves, confusion matrices, image grids, leaderboards.

Every figure is drawn with matplotlib's Agg backend (no display needed) and closed after saving.
"""

from __future__ import annotations

import textwrap
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
    scale; no panel where no stage had one: a logistic head alone), over both stages, the stage
    boundary marked."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()

    rated = pd.to_numeric(history["learning_rate"], errors="coerce").notna().any()  # no rate: a logistic head alone
    metrics = ("loss", "accuracy", "learning_rate") if rated else ("loss", "accuracy")
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), constrained_layout=True)
    for axis, metric in zip(axes, metrics):
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


def plot_logistic_fit(strengths: Sequence[float], losses: Sequence[float], chosen: float, folds: int, path: Path) -> None:
    """How a logistic head's C was chosen: the mean held-out log loss of the cross-validation at
    each C of the grid (log axis), the chosen C marked."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    axis.plot(strengths, losses, marker="o", color="#2a6", label=f"mean held-out log loss ({folds} folds)")
    at = int(np.argmin(np.abs(np.log(np.asarray(strengths)) - np.log(chosen))))
    axis.axvline(chosen, color="#c44", linestyle="--")
    axis.plot([chosen], [losses[at]], "o", color="#c44", label=f"chosen C = {chosen:.3g}")
    axis.set_xscale("log")
    axis.set_xlabel("C, inverse regularization strength (log scale; smaller: stronger)")
    axis.set_ylabel("cross-validated log loss")
    axis.set_title("logistic head: C chosen by cross-validation on the training split")
    axis.grid(alpha=0.3, which="both")
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
    rows = leaderboard.iloc[::-1]
    multi = leaderboard.attrs.get("rank_by") == "val_map"  # multi-label: ranked by mean average precision
    failed = [isinstance(e, str) and bool(e) for e in rows["error"]]
    notes = [_failure(row.error) if bad else (
        f"{row.val_map:.3f}  (exact label sets {row.val_accuracy:.3f}, {row.train_seconds:.0f} s)" if multi else
        f"{row.val_accuracy:.3f}  (top-3 {row.top3_accuracy:.3f}, {row.train_seconds:.0f} s)") for bad, row in zip(failed, rows.itertuples())]
    names = dict(zip(leaderboard["backbone"], distinct_labels(leaderboard["backbone"])))
    labels = [f"{names[r.backbone]} ({r.mode})" for r in rows.itertuples()]
    score = rows["val_map" if multi else "val_accuracy"].astype(float).fillna(0).to_numpy()
    _noted_bars(labels, score, None, failed, notes, path,
                xlabel="validation mean average precision" if multi else "validation accuracy", title="leaderboard")


def _failure(error: str) -> str:
    """A failed backbone's reason, on two lines at most (the whole of it is in the table's CSV)."""
    return textwrap.fill("failed: " + textwrap.shorten(error, 130, placeholder=" ..."), 70)


def _noted_bars(labels: Sequence[str], values: np.ndarray, spread: np.ndarray | None, failed: Sequence[bool],
                notes: Sequence[str], path: Path, *, xlabel: str, title: str) -> None:
    """Horizontal bars of scores in [0, 1] (the axis ends at 1), a failed one red, each bar's note
    written beside the axis on its right (where the layout keeps it inside the figure)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 0.6 * len(labels) + 1.6), constrained_layout=True)
    positions = np.arange(len(labels))
    axis.barh(positions, values, xerr=spread, color=["#c44" if bad else "#4a7" for bad in failed], capsize=3)
    axis.set_yticks(positions, labels)
    axis.set_xlim(0, 1)
    axis.set_ylim(-0.6, len(labels) - 0.4)
    notes_axis = axis.twinx()  # the notes as the right-hand tick labels: inside the figure, off the bars
    notes_axis.set_ylim(axis.get_ylim())
    notes_axis.set_yticks(positions, notes, fontsize=8)
    notes_axis.tick_params(right=False)
    axis.set_xlabel(xlabel)
    axis.grid(alpha=0.3, axis="x")
    axis.set_title(title)
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
    axis.set_title(textwrap.fill(title, 100), fontsize=10)  # wrapped: a long title was cut at the figure's edge
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
    shown = dict(zip(names, distinct_labels(names)))
    axis.set_yticks(range(len(names)), [shown[name] + (f" ({failed[name]} failed)" if failed[name] else "") for name in names])
    axis.set_ylim(-0.7, len(names) - 0.3)
    axis.set_xlim(0, 1.02)
    axis.set_xlabel(f"held-out {metric.replace('_', ' ')} per fold (mean +- sd)")
    axis.set_title(f"{table['fold'].max()}-fold cross-validation")
    axis.grid(alpha=0.3, axis="x")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_reliability(rows: list[dict], path: Path, *, title: str = "reliability") -> None:
    """A reliability diagram: each confidence bin's accuracy as a bar against the diagonal (perfect
    calibration), its image count written on it (`transfer.metrics.calibration.reliability` rows)."""
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


def plot_novelty(table: pd.DataFrame, summary: dict, path: Path) -> None:
    """The novelty scores of the in-class images and of those outside the classes (`unknown.csv`'s
    `set`), as two histograms on the same bins, each as shares of its own set, with the detector's threshold."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    bins = np.histogram_bin_edges(table["novelty"], bins=40)
    names = {"in_class": "the model's classes", "other": "outside the classes"}
    for (name, group), colour in zip(table.groupby("set", sort=False), ("#4c72b0", "#55a868", "#dd8452")):
        share = f"{np.mean(group['unknown']):.0%} answered unknown"
        axis.hist(group["novelty"], bins=bins, weights=np.full(len(group), 1 / len(group)), alpha=0.6, color=colour,
                  label=f"{names.get(name, name)} ({len(group)}): {share}")
    axis.axvline(summary["unknown_threshold"], color="black", linestyle="--", linewidth=1, label="threshold")
    axis.set_xlabel("novelty score (beyond the threshold: unknown)")
    axis.set_ylabel("share of the set's images")
    title = "novelty" + (f": AUROC {summary['unknown_auroc']:.3f}" if "unknown_auroc" in summary else "")
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_precision_recall(evaluation, path: Path) -> None:
    """Each label's precision-recall curve (scikit-learn's) from a multi-label evaluation, with its
    average precision in the legend and its threshold's operating point marked."""
    from sklearn.metrics import precision_recall_curve

    from transfer.metrics.multilabel import multi_hot
    from transfer.metrics.multilabel import decide

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
    rows = table.iloc[::-1]
    failed = rows["error"].astype(bool).to_numpy()
    notes = [_failure(row.error) if row.error else f"{row.accuracy:.3f} +- {row.accuracy_sd:.3f}  (LogME {row.log_me:.3f})"
             for row in rows.itertuples()]
    names = dict(zip(table["backbone"], distinct_labels(table["backbone"])))
    _noted_bars([names[name] for name in rows["backbone"]], rows["accuracy"].astype(float).fillna(0).to_numpy(),
                rows["accuracy_sd"].astype(float).fillna(0).to_numpy(), failed, notes, path,
                xlabel="linear-probe accuracy on frozen features (cross-validated; not the fine-tuned result)",
                title="probe: backbones ranked")


def plot_curve(curve: pd.DataFrame, path: Path) -> None:
    """Held-out accuracy against training images per class (log axis), mean +- sd over draws, a line per backbone."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    names = dict(zip(dict.fromkeys(curve["backbone"]), distinct_labels(list(dict.fromkeys(curve["backbone"])))))
    for name, rows in curve.groupby("backbone", sort=False):
        stats = rows.groupby("per_class")["accuracy"].agg(["mean", "std"]).fillna(0)
        axis.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=names[name])
    axis.set_xscale("log")
    axis.set_xlabel("training images per class (nested, stratified subsets)")
    axis.set_ylabel("held-out accuracy (mean +- sd over draws)")
    axis.set_title("would more images help? (linear probe on frozen features)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def distinct_labels(names: Sequence[str]) -> list[str]:
    """Short labels for backbones, one per name and never two alike: a registry name or preset as
    it is, a model file by its stem where that is unique, else by the shortest ending of its path
    that tells it apart (`.../a/model.keras` beside `.../b/model.keras`)."""
    names = [str(name) for name in names]
    files = [name.endswith(".keras") for name in names]
    parts = [Path(name).parts if file else (name,) for name, file in zip(names, files)]
    depth = [1] * len(names)

    def label(i: int) -> str:
        if not files[i]:
            return names[i]
        if depth[i] == 1:
            return Path(names[i]).stem
        shown = "/".join(parts[i][-depth[i]:])
        return shown if depth[i] >= len(parts[i]) else f".../{shown}"

    while True:
        labels = [label(i) for i in range(len(names))]
        alike = [i for i, text in enumerate(labels) if labels.count(text) > 1 and depth[i] < len(parts[i])]
        if not alike:
            return labels
        for i in alike:
            depth[i] += 1
