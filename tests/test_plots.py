"""The figures: labels that tell backbones apart, scores on an axis that ends at 1, nothing cut at the edge."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from transfer.outputs.figures import distinct_labels, plot_leaderboard, plot_lr_find, plot_probe
from tests.helpers import assert_picture


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions close, kept for the test to look at."""
    figures, close = [], plt.close

    def keep(figure=None):
        figures.append(figure)
        close(figure)

    monkeypatch.setattr(plt, "close", keep)
    return figures


def texts_outside(figure) -> list[str]:
    """What of `figure` reaches past its edges (by more than a pixel): each axes with everything it
    draws (title, tick labels, axis labels), by its title."""
    canvas = FigureCanvasAgg(figure)  # drawn again as saved (closed figures lose their canvas)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = figure.bbox
    cut = []
    for axis in figure.axes:
        extent = axis.get_tightbbox(renderer)
        if extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y0 < box.y0 - 1 or extent.y1 > box.y1 + 1:
            cut.append(axis.get_title() or axis.get_ylabel() or "an axes")
    return cut


def test_distinct_labels_shorten_paths_only_as_far_as_they_stay_apart():
    names = ["/data/models/a/model.keras", "/data/models/b/model.keras", "resnet50", "/elsewhere/lite0.keras",
             "x/same/model.keras", "y/same/model.keras"]
    labels = distinct_labels(names)
    assert labels == [".../a/model.keras", ".../b/model.keras", "resnet50", "lite0",
                      "x/same/model.keras", "y/same/model.keras"]
    assert len(set(labels)) == len(names)
    for name, label in zip(names, labels):  # each label is the name or an ending of its path
        assert name == label or name.endswith(label.removeprefix(".../")) or name.endswith(f"/{label}.keras")


def probe_table(names):
    return pd.DataFrame({"backbone": names, "accuracy": [0.97, 0.91, np.nan], "accuracy_sd": [0.02, 0.05, np.nan],
                         "log_me": [1.2, 0.8, np.nan], "error": ["", "", "could not load the file; a very long reason " * 3]})


def test_probe_figure_keeps_files_apart_ends_its_axis_at_one_and_cuts_no_text(tmp_path, drawn):
    names = ["/models/run-a/model.keras", "/models/run-b/model.keras", "resnet50"]
    plot_probe(probe_table(names), tmp_path / "probe.png")
    figure = drawn[-1]
    axis = figure.axes[0]
    assert axis.get_xlim() == (0, 1)  # accuracy: nothing above 1
    ticks = [label.get_text() for label in axis.get_yticklabels()]
    assert sorted(ticks) == sorted([".../run-a/model.keras", ".../run-b/model.keras", "resnet50"])
    notes = " ".join(label.get_text() for ax in figure.axes for label in ax.get_yticklabels())
    assert "0.970 +- 0.020" in notes and "failed: could not load" in notes
    assert texts_outside(figure) == []
    assert_picture(tmp_path / "probe.png")


def test_leaderboard_figure_ends_its_axis_at_one_and_cuts_no_text(tmp_path, drawn):
    board = pd.DataFrame({"backbone": ["/m/x/model.keras", "/m/y/model.keras"], "mode": ["frozen", "frozen"],
                          "val_accuracy": [0.95, np.nan], "top3_accuracy": [1.0, np.nan], "train_seconds": [12.0, np.nan],
                          "error": ["", "weights could not be read"]})
    plot_leaderboard(board, tmp_path / "leaderboard.png")
    figure = drawn[-1]
    assert figure.axes[0].get_xlim() == (0, 1)
    assert sorted(t.get_text() for t in figure.axes[0].get_yticklabels()) == [".../x/model.keras (frozen)", ".../y/model.keras (frozen)"]
    assert texts_outside(figure) == []


def test_lr_find_title_is_whole_inside_the_figure(tmp_path, drawn):
    rates = np.geomspace(1e-6, 1, 50)
    table = pd.DataFrame({"learning_rate": rates, "loss": np.linspace(2, 1, 50), "smoothed_loss": np.linspace(2, 1, 50)})
    title = ("lr-find: the new head on the frozen efficientnet_lite0_notop's features (--weights "
             "/a/rather/long/path/to/some/weights/efficientnet_lite0_notop.keras; unaugmented)")
    plot_lr_find(table, 1e-3, tmp_path / "lr_find.png", title=title)
    figure = drawn[-1]
    assert " ".join(figure.axes[0].get_title().split()) == title  # all of it, wrapped
    assert texts_outside(figure) == []


def test_curves_of_a_logistic_head_alone_have_no_empty_learning_rate_panel(tmp_path, drawn):
    from transfer.outputs.figures import plot_curves

    fitted = pd.DataFrame({"epoch": [0], "stage": ["logistic"], "accuracy": [0.9], "loss": [0.3], "val_accuracy": [0.8],
                           "val_loss": [0.4], "learning_rate": [np.nan]})
    plot_curves(fitted, tmp_path / "curves.png")
    assert [axis.get_title() for axis in drawn[-1].axes] == ["loss", "accuracy"]
    trained = pd.concat([fitted, fitted.assign(epoch=1, stage="finetune", learning_rate=1e-5)], ignore_index=True)
    plot_curves(trained, tmp_path / "curves.png")
    assert [axis.get_title() for axis in drawn[-1].axes] == ["loss", "accuracy", "learning rate"]
