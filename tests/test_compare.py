"""compare: every backbone on one split; a backbone that fails gets a row with the reason."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers import assert_picture, few_photos
from transfer.cli import app
from transfer.models.saving import load_run_model

pytestmark = pytest.mark.slow

runner = CliRunner()


def test_compare_trains_each_backbone_on_one_split(tmp_path, hymenoptera):
    """Both sides train (a baseline from scratch, a backbone frozen under a new head) on the very
    images of the comparison's split, and the leaderboard reports what each run's model holds."""
    from transfer.outputs.artifacts import Run

    data = few_photos(hymenoptera / "train", tmp_path / "data", per_class=6)
    out = tmp_path / "compare"
    result = runner.invoke(app, [
        "compare", str(data), "--backbones", "lenet,resnet50", "--weights", "none", "--epochs", "1", "--image-size", "32",
        "--val-split", "0.5", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    rows = board.set_index("backbone")
    assert sorted(board["backbone"]) == ["lenet", "resnet50"] and (board["error"] == "").all()
    assert rows.loc["lenet", "mode"] == "scratch" and rows.loc["resnet50", "mode"] == "frozen"
    split = pd.read_csv(out / "split.csv")
    for name in ("lenet", "resnet50"):
        run = Run.open(out / "runs" / name)
        model = load_run_model(run)
        assert int(rows.loc[name, "parameters"]) == model.count_params()
        assert int(rows.loc[name, "trainable_parameters"]) == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert pd.read_csv(run.path / "split.csv").equals(split), f"{name} trained on another split"
        trained = json.loads((run.path / "metrics.json").read_text())  # measured by the run itself, at its kept epoch
        assert float(rows.loc[name, "val_accuracy"]) == pytest.approx(trained["val_accuracy"], abs=1e-6)
    assert int(rows.loc["lenet", "parameters"]) == int(rows.loc["lenet", "trainable_parameters"])
    assert int(rows.loc["resnet50", "trainable_parameters"]) < int(rows.loc["resnet50", "parameters"]), "the backbone is frozen"
    assert_picture(out / "leaderboard.png")


def test_a_backbone_that_fails_is_reported_and_the_others_still_run(tmp_path, hymenoptera, offline_keras):
    data = few_photos(hymenoptera / "train", tmp_path / "data", per_class=6)
    out = tmp_path / "compare"
    result = runner.invoke(app, [
        "compare", str(data), "--backbones", "vgg16,lenet", "--epochs", "1", "--image-size", "32",
        "--val-split", "0.5", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    rows = board.set_index("backbone")
    assert list(board["backbone"]) == ["lenet", "vgg16"], "a failed backbone comes last"
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in rows.loc["vgg16", "error"]
    assert rows.loc["lenet", "error"] == ""
    trained = json.loads((out / "runs" / "lenet" / "metrics.json").read_text())
    assert float(rows.loc["lenet", "val_accuracy"]) == pytest.approx(trained["val_accuracy"], abs=1e-6)
    assert rows.loc["vgg16", "run_dir"] == "", "a failed backbone left no run to point to"
    assert (Path(rows.loc["lenet", "run_dir"]) / "model.keras").is_file()


def test_a_comparison_where_every_backbone_fails_says_so(tmp_path, offline_keras):
    from tests.helpers import image_folder

    data = image_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "compare"
    result = runner.invoke(app, ["compare", str(data), "--backbones", "resnet50,vgg16", "--epochs", "1",
                                 "--image-size", "32", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "error: Every backbone failed (resnet50: Cannot download resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in result.output
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert board["error"].str.contains("weights_tf_dim_ordering_tf_kernels_notop.h5").all()


def test_ctrl_c_stops_the_comparison_and_publishes_nothing(tmp_path, monkeypatch):
    import transfer.selection.compare
    from tests.helpers import image_folder
    from transfer.core.errors import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("Training interrupted.")

    monkeypatch.setattr(transfer.selection.compare, "train", interrupted)
    data = image_folder(tmp_path / "data", per_class=4)
    result = runner.invoke(app, ["compare", str(data), "--backbones", "lenet,alexnet", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 130 and "Comparison interrupted: nothing was written to" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no comparison, no staging folder left"
