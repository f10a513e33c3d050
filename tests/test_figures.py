"""`transfer.outputs.figures`: each figure is a PNG of the size its function sets, and what is drawn on it is
the data it was given. The figure is read back as it is saved (`Figure.savefig` is wrapped), so its
lines, bars, cells and limits are compared with values computed here from the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transfer.outputs import figures as plots


@pytest.fixture
def saved(monkeypatch) -> list:
    """The figures saved while the test runs, in order (still readable after `plt.close`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figures, original = [], Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def png(path: Path, width_inches: float, height_inches: float) -> np.ndarray:
    """The PNG at `path` decoded: it must be `figsize` x 100 dpi; its RGB pixels."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(width_inches * 100), round(height_inches * 100))
        return np.asarray(image.convert("RGB"))


def texts(axis) -> list[str]:
    return [text.get_text() for text in axis.texts]


# Training curves


def history(rates=(1e-3, 1e-3, 1e-3, 1e-5, 1e-5)) -> pd.DataFrame:
    return pd.DataFrame({
        "stage": ["frozen"] * 3 + ["finetune"] * 2, "epoch": [1, 2, 3, 4, 5],
        "loss": [1.2, 0.8, 0.6, 0.5, 0.45], "val_loss": [1.3, 0.9, 0.8, 0.7, 0.72],
        "accuracy": [0.5, 0.7, 0.8, 0.85, 0.9], "val_accuracy": [0.45, 0.6, 0.7, 0.75, 0.74],
        "learning_rate": list(rates),
    })


def test_curves_draw_each_metric_and_the_stage_boundary(tmp_path, saved):
    frame = history()
    plots.plot_curves(frame, tmp_path / "curves.png")
    png(tmp_path / "curves.png", 15, 4)
    loss, accuracy, rate = saved[0].axes
    assert [axis.get_title() for axis in (loss, accuracy, rate)] == ["loss", "accuracy", "learning rate"]
    for axis, metric in ((loss, "loss"), (accuracy, "accuracy")):
        curves = [line for line in axis.get_lines() if line.get_label().endswith(metric)]
        assert [line.get_label() for line in curves] == [f"train {metric}", f"validation {metric}"]
        assert list(curves[0].get_xdata()) == [1, 2, 3, 4, 5]
        assert list(curves[0].get_ydata()) == frame[metric].tolist()
        assert list(curves[1].get_ydata()) == frame[f"val_{metric}"].tolist()
    assert rate.get_yscale() == "log"
    for axis in (loss, accuracy, rate):
        boundaries = [line.get_xdata()[0] for line in axis.get_lines() if line.get_linestyle() == "--"]
        assert boundaries == [3.5], "fine-tuning starts after epoch 3"
        assert texts(axis) == ["finetune starts"]


def test_curves_of_one_stage_without_rates_have_no_boundary_and_no_rate_panel(tmp_path, saved):
    frame = history(rates=(np.nan,) * 5).assign(stage="scratch")  # a logistic head: no learning rate at all
    plots.plot_curves(frame, tmp_path / "curves.png")
    png(tmp_path / "curves.png", 10, 4)  # two panels of 5 inches, not three
    assert [axis.get_title() for axis in saved[0].axes] == ["loss", "accuracy"]
    for axis in saved[0].axes:
        assert not [line for line in axis.get_lines() if line.get_linestyle() == "--"] and texts(axis) == []
        assert not [line for line in axis.get_lines() if "learning rate" in line.get_label()]


def test_curves_with_rates_of_zero_keep_a_linear_rate_axis(tmp_path, saved):
    plots.plot_curves(history(rates=(0.0,) * 5), tmp_path / "curves.png")
    png(tmp_path / "curves.png", 15, 4)
    rate = saved[0].axes[2]
    assert rate.get_title() == "learning rate"
    assert rate.get_yscale() == "linear", "no positive rate to put on a log scale"
    assert list(rate.get_lines()[0].get_ydata()) == [0.0] * 5


# Confusion matrix


def test_confusion_matrix_cells_hold_the_counts(tmp_path, saved):
    counts = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    names = ["ant", "bee", "wasp"]
    plots.plot_confusion_matrix(pd.DataFrame(counts, index=names, columns=names), tmp_path / "cm.png")
    png(tmp_path / "cm.png", 5, 4)  # 3 classes: the smallest side, 4 inches (+1 for the colour bar)
    axis = saved[0].axes[0]
    image = axis.get_images()[0]
    np.testing.assert_array_equal(image.get_array(), counts)
    assert image.get_clim() == (0, 9)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in axis.texts}
    assert {key: t.get_text() for key, t in cells.items()} == {(i, j): str(counts[i, j]) for i in range(3) for j in range(3)}
    assert cells[(2, 2)].get_color() == "white", "the darkest cell (9) gets white text"
    assert cells[(0, 2)].get_color() == "black", "an empty cell is near white: black text"
    assert [t.get_text() for t in axis.get_xticklabels()] == names and [t.get_text() for t in axis.get_yticklabels()] == names
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("predicted", "true")


def test_confusion_matrix_pictures_differ_with_their_counts(tmp_path):
    names = ["a", "b"]
    plots.plot_confusion_matrix(pd.DataFrame([[9, 0], [0, 9]], index=names, columns=names), tmp_path / "one.png")
    plots.plot_confusion_matrix(pd.DataFrame([[0, 9], [9, 0]], index=names, columns=names), tmp_path / "two.png")
    one, two = png(tmp_path / "one.png", 5, 4), png(tmp_path / "two.png", 5, 4)
    assert (one != two).any(axis=2).mean() > 0.05, "the dark cells moved from the diagonal"


def test_an_empty_confusion_matrix_keeps_a_scale_from_zero_to_one(tmp_path, saved):
    names = ["a", "b"]
    plots.plot_confusion_matrix(pd.DataFrame([[0, 0], [0, 0]], index=names, columns=names), tmp_path / "cm.png")
    assert saved[0].axes[0].get_images()[0].get_clim() == (0, 1)
    assert {t.get_color() for t in saved[0].axes[0].texts} == {"black"}


def test_a_large_confusion_matrix_has_no_cell_text_and_a_capped_size(tmp_path, saved):
    n = 31
    names = [f"c{i}" for i in range(n)]
    plots.plot_confusion_matrix(pd.DataFrame(np.eye(n, dtype=int), index=names, columns=names), tmp_path / "cm.png")
    png(tmp_path / "cm.png", 21, 20)  # 0.6 * 31 + 2 = 20.6 inches, capped at 20
    assert len(saved[0].axes[0].texts) == 0


def test_cell_text_colours_follow_the_cells_darkness():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.array([[0, 10]])
    figure, axis = plt.subplots()
    image = axis.imshow(values, cmap="Blues", vmin=0, vmax=10)
    assert plots.cell_text_colours(values, image).tolist() == [["black", "white"]]
    grey = axis.imshow(values, cmap="gray", vmin=0, vmax=10)  # black at 0, white at 10
    assert plots.cell_text_colours(values, grey).tolist() == [["white", "black"]]
    plt.close(figure)


# Image grid


def test_image_grid_shows_each_image_clipped_with_its_title(tmp_path, saved):
    red = np.zeros((6, 6, 3))
    red[..., 0] = 1.7  # clipped to 1
    gray = np.linspace(-1, 2, 36).reshape(6, 6)
    images = [red, gray, red, gray, red]
    plots.plot_image_grid(images, ["r0", "g1", "r2", "g3", "r4"], tmp_path / "grid.png", columns=3, cmap="gray", title="filters")
    pixels = png(tmp_path / "grid.png", 3 * 1.6, 2 * 1.6 + 0.4)  # 5 images in 3 columns: 2 rows
    axes = saved[0].axes
    shown = [axis for axis in axes if axis.get_images()]
    assert len(axes) == 6 and len(shown) == 5
    assert [axis.get_title() for axis in shown] == ["r0", "g1", "r2", "g3", "r4"]
    np.testing.assert_array_equal(shown[0].get_images()[0].get_array(), np.clip(red, 0, 1))
    np.testing.assert_array_equal(shown[1].get_images()[0].get_array(), np.clip(gray, 0, 1))
    assert saved[0].get_suptitle() == "filters"
    pure_red = (pixels[..., 0] > 240) & (pixels[..., 1] < 15) & (pixels[..., 2] < 15)
    assert pure_red.sum() > 3 * 100, "the three red tiles are drawn in pure red"


def test_image_grid_of_one_image_without_title(tmp_path, saved):
    plots.plot_image_grid([np.ones((4, 4))], ["only"], tmp_path / "grid.png")
    png(tmp_path / "grid.png", 1.6, 1.6)
    assert len(saved[0].axes) == 1 and saved[0].get_suptitle() == ""


# Leaderboard


def leaderboard() -> pd.DataFrame:
    return pd.DataFrame({
        "backbone": ["resnet50", "lenet", "vgg16"], "mode": ["frozen", "scratch", "frozen"],
        "val_accuracy": [0.92, 0.71, np.nan], "top3_accuracy": [0.99, 0.95, np.nan], "val_map": [np.nan] * 3,
        "train_seconds": [31.0, 4.0, np.nan], "error": ["", "", "out of memory"],
    })


def bar_notes(figure, axis) -> list[str]:
    """The notes written beside the bars of `axis`: the right-hand tick labels of its twin, one at
    each bar's height, every one right of the axis and inside the figure."""
    twins = [other for other in figure.axes if other is not axis]
    assert len(twins) == 1
    twin = twins[0]
    assert twin.get_ylim() == axis.get_ylim()
    centres = [bar.get_y() + bar.get_height() / 2 for bar in axis.patches]
    np.testing.assert_allclose(twin.get_yticks(), centres)
    labels = twin.get_yticklabels()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()  # the figure is closed: a fresh canvas, same layout
    right, width = axis.get_window_extent(renderer).x1, figure.bbox.width
    for label in labels:
        extent = label.get_window_extent(renderer)
        assert right <= extent.x0 and extent.x1 <= width + 0.5, label.get_text()
    return [label.get_text() for label in labels]


def test_leaderboard_bars_are_the_accuracies_best_at_the_top(tmp_path, saved):
    plots.plot_leaderboard(leaderboard(), tmp_path / "lb.png")
    png(tmp_path / "lb.png", 10, 0.6 * 3 + 1.6)
    axis = saved[0].axes[0]
    bars = axis.patches
    # barh draws from the bottom: the last row first, so the best (first) row is at the top
    assert [round(bar.get_width(), 6) for bar in bars] == [0.0, 0.71, 0.92]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["vgg16 (frozen)", "lenet (scratch)", "resnet50 (frozen)"]
    red, green = (0xcc / 255, 0x44 / 255, 0x44 / 255), (0x44 / 255, 0xaa / 255, 0x77 / 255)
    np.testing.assert_allclose([bar.get_facecolor()[:3] for bar in bars], [red, green, green])
    assert texts(axis) == [], "no note on the bars themselves"
    assert bar_notes(saved[0], axis) == ["failed: out of memory", "0.710  (top-3 0.950, 4 s)", "0.920  (top-3 0.990, 31 s)"]
    assert axis.get_xlim() == (0, 1) and axis.get_xlabel() == "validation accuracy"


def test_a_multi_label_leaderboard_ranks_by_mean_average_precision(tmp_path, saved):
    table = leaderboard().assign(val_map=[0.8, 0.6, np.nan])
    table.attrs["rank_by"] = "val_map"
    plots.plot_leaderboard(table, tmp_path / "lb.png")
    axis = saved[0].axes[0]
    assert [round(bar.get_width(), 6) for bar in axis.patches] == [0.0, 0.6, 0.8]
    assert axis.get_xlabel() == "validation mean average precision" and axis.get_xlim() == (0, 1)
    assert bar_notes(saved[0], axis) == ["failed: out of memory", "0.600  (exact label sets 0.710, 4 s)",
                                         "0.800  (exact label sets 0.920, 31 s)"]


# Learning-rate sweep


def test_lr_find_marks_the_suggestion_and_frames_the_loss(tmp_path, saved):
    rates = np.geomspace(1e-6, 1, 25)
    smoothed = 2.0 - 1.5 * np.exp(-((np.log10(rates) + 2) ** 2))  # lowest at 1e-2, 2.0 at the start
    table = pd.DataFrame({"learning_rate": rates, "loss": smoothed + 0.1, "smoothed_loss": smoothed})
    plots.plot_lr_find(table, 1e-3, tmp_path / "lr.png", title="sweep")
    png(tmp_path / "lr.png", 8, 4.5)
    axis = saved[0].axes[0]
    assert axis.get_xscale() == "log" and axis.get_title() == "sweep"
    low, first = smoothed.min(), smoothed[0]
    span = max(first - low, 0.05 * first, 1e-3)
    np.testing.assert_allclose(axis.get_ylim(), (low - 0.2 * span, first + 1.5 * span))
    nearest = np.abs(rates - 1e-3).argmin()
    marker = [line for line in axis.get_lines() if line.get_label().startswith("suggested")][0]
    assert marker.get_label() == "suggested --lr 0.001"
    np.testing.assert_allclose([marker.get_xdata()[0], marker.get_ydata()[0]], [1e-3, smoothed[nearest]])
    assert [line.get_xdata()[0] for line in axis.get_lines() if line.get_linestyle() == "--"] == [1e-3]


def test_lr_find_with_a_diverged_loss_keeps_the_automatic_limits(tmp_path, saved):
    table = pd.DataFrame({"learning_rate": [1e-4, 1e-3, 1e-2], "loss": [1.0, 0.8, np.inf], "smoothed_loss": [np.inf, 0.8, np.inf]})
    plots.plot_lr_find(table, 1e-3, tmp_path / "lr.png", title="sweep")
    png(tmp_path / "lr.png", 8, 4.5)
    low, high = saved[0].axes[0].get_ylim()
    assert np.isfinite(low) and np.isfinite(high) and low < 0.8 < high


# Cross-validation


def test_cross_validation_shows_each_fold_and_the_mean_and_sd(tmp_path, saved):
    table = pd.DataFrame({"backbone": ["lenet"] * 3 + ["alexnet"] * 3, "fold": [1, 2, 3] * 2,
                          "accuracy": [0.8, 0.9, 0.7, 0.6, np.nan, 0.5], "error": ["", "", "", "", "nan loss", ""]})
    plots.plot_cross_validation(table, tmp_path / "cv.png")
    png(tmp_path / "cv.png", 8, 0.8 * 2 + 1.8)
    axis = saved[0].axes[0]
    dots = [collection.get_offsets() for collection in axis.collections if len(collection.get_offsets()) and
            collection.__class__.__name__ == "PathCollection"]
    np.testing.assert_allclose(dots[0], [[0.8, 0], [0.9, 0], [0.7, 0]])
    np.testing.assert_allclose(dots[1], [[0.6, 1], [0.5, 1]])
    assert texts(axis) == [f"0.800 +- {np.std([0.8, 0.9, 0.7], ddof=1):.3f}", f"0.550 +- {np.std([0.6, 0.5], ddof=1):.3f}"]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["lenet", "alexnet (1 failed)"]
    assert axis.get_xlim() == (0, 1.02) and axis.get_title() == "3-fold cross-validation"


# Reliability


def test_reliability_bars_are_each_bins_accuracy(tmp_path, saved):
    rows = [{"lower": 0.0, "upper": 0.25, "count": 0, "confidence": None, "accuracy": None},  # equal widths, as
            {"lower": 0.25, "upper": 0.5, "count": 4, "confidence": 0.4, "accuracy": 0.5},  # `transfer.metrics.calibration.
            {"lower": 0.5, "upper": 0.75, "count": 6, "confidence": 0.6, "accuracy": 1.0}]  # reliability` makes them
    plots.plot_reliability(rows, tmp_path / "rel.png", title="calibrated")
    png(tmp_path / "rel.png", 5.5, 5)
    axis = saved[0].axes[0]
    bars = [(bar.get_x(), bar.get_width(), bar.get_height()) for bar in axis.patches]
    np.testing.assert_allclose(bars, [(0.25, 0.25, 0.5), (0.5, 0.25, 1.0)])
    assert texts(axis) == ["4", "6"] and axis.get_title() == "calibrated"
    assert axis.get_xlim() == (0, 1) and axis.get_ylim() == (0, 1)


# Precision-recall


def test_precision_recall_curve_and_the_thresholds_operating_point(tmp_path, saved):
    from types import SimpleNamespace

    labels = ["cat;dog", "cat", "", "dog", "cat", ""]
    scores = np.array([[0.9, 0.8], [0.7, 0.2], [0.4, 0.1], [0.3, 0.9], [0.2, 0.3], [0.6, 0.35]])
    per_class = pd.DataFrame({"threshold": [0.5, 0.5], "average_precision": [0.81, 1.0]}, index=["cat", "dog"])
    evaluation = SimpleNamespace(examples=pd.DataFrame({"label": labels}), class_names=["cat", "dog"], scores=scores,
                                 per_class=per_class, summary={"mean_average_precision": 0.905})
    plots.plot_precision_recall(evaluation, tmp_path / "pr.png")
    png(tmp_path / "pr.png", 6, 5)
    axis = saved[0].axes[0]
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["cat (AP 0.81)", "dog (AP 1.00)"]
    # cat: truth rows 0, 1, 4; at 0.5 chosen rows 0, 1, 5: 2 hits -> recall 2/3, precision 2/3.
    # dog: truth rows 0, 3; at 0.5 chosen rows 0, 3: recall 1, precision 1.
    points = [collection.get_offsets()[0] for collection in axis.collections]
    np.testing.assert_allclose(points, [[2 / 3, 2 / 3], [1, 1]])
    assert "mAP 0.905" in axis.get_title()


# Probe and data-efficiency curve


def test_probe_bars_and_their_spread(tmp_path, saved):
    table = pd.DataFrame({"backbone": ["resnet50", "/models/mine.keras", "vgg16"], "accuracy": [0.9, 0.8, np.nan],
                          "accuracy_sd": [0.02, 0.05, np.nan], "log_me": [1.2, 0.7, np.nan], "error": ["", "", "no weights"]})
    plots.plot_probe(table, tmp_path / "probe.png")
    png(tmp_path / "probe.png", 10, 0.6 * 3 + 1.6)
    axis = saved[0].axes[0]
    assert [round(bar.get_width(), 6) for bar in axis.patches] == [0.0, 0.8, 0.9]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["vgg16", "mine", "resnet50"]
    assert axis.get_xlim() == (0, 1)
    # the spread: a horizontal error bar of +- sd at each bar's end (none for the failed one)
    from matplotlib.container import ErrorbarContainer

    spread, = [c for c in axis.containers if isinstance(c, ErrorbarContainer)]
    segments = np.asarray(spread.lines[2][0].get_segments(), float)
    np.testing.assert_allclose(segments, [[[0, 0], [0, 0]], [[0.8 - 0.05, 1], [0.8 + 0.05, 1]], [[0.9 - 0.02, 2], [0.9 + 0.02, 2]]])
    assert texts(axis) == []
    assert bar_notes(saved[0], axis) == ["failed: no weights", "0.800 +- 0.050  (LogME 0.700)", "0.900 +- 0.020  (LogME 1.200)"]


def test_curve_draws_the_mean_over_draws_per_backbone(tmp_path, saved):
    curve = pd.DataFrame({"backbone": ["a"] * 4 + ["/m/b.keras"] * 4, "per_class": [5, 5, 20, 20] * 2,
                          "accuracy": [0.5, 0.7, 0.8, 0.9, 0.4, 0.4, 0.6, 0.7]})
    plots.plot_curve(curve, tmp_path / "curve.png")
    png(tmp_path / "curve.png", 7, 4.5)
    axis = saved[0].axes[0]
    data = {container.get_label(): (np.asarray(container.lines[0].get_xdata(), float).tolist(), list(np.round(np.asarray(container.lines[0].get_ydata(), float), 6)))
            for container in axis.containers}
    assert data == {"a": ([5, 20], [0.6, 0.85]), "b": ([5, 20], [0.4, 0.65])}
    segments = np.asarray(axis.containers[0].lines[2][0].get_segments(), float)  # backbone a's error bars
    sd5, sd20 = np.std([0.5, 0.7], ddof=1), np.std([0.8, 0.9], ddof=1)
    np.testing.assert_allclose(segments, [[[5, 0.6 - sd5], [5, 0.6 + sd5]], [[20, 0.85 - sd20], [20, 0.85 + sd20]]])
    assert axis.get_xscale() == "log"
