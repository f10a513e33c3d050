"""compare: every backbone on one split; a backbone that fails gets a row with the reason."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers import few_photos
from transfer.cli import app

pytestmark = pytest.mark.slow

runner = CliRunner()


def test_compare_trains_each_on_one_split_and_reports_failures(tmp_path, hymenoptera, monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname, origin, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: [Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "get_file", offline)
    data = few_photos(hymenoptera / "train", tmp_path / "data", per_class=6)
    out = tmp_path / "compare"
    result = runner.invoke(app, [
        "compare", str(data), "--backbones", "lenet,resnet50,vgg16", "--epochs", "1", "--image-size", "32",
        "--val-split", "0.5", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    rows = board.set_index("backbone")
    assert list(board["backbone"])[-1] == "vgg16" and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in rows.loc["vgg16", "error"]
    # resnet50 has no --weights none here: it fails the same way, and lenet still ran.
    assert rows.loc["lenet", "error"] == "" and 0 <= float(rows.loc["lenet", "val_accuracy"]) <= 1
    assert rows.loc["lenet", "mode"] == "scratch" and rows.loc["resnet50", "mode"] == "frozen"
    assert int(rows.loc["lenet", "parameters"]) == int(rows.loc["lenet", "trainable_parameters"]) > 0
    assert (out / "leaderboard.png").stat().st_size > 5000
    split = pd.read_csv(out / "runs" / "lenet" / "split.csv")
    assert split.equals(pd.read_csv(out / "split.csv"))


def test_a_comparison_where_every_backbone_fails_says_so(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    from tests.helpers import image_folder

    def offline(fname, origin, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: [Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "get_file", offline)
    data = image_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "compare"
    result = runner.invoke(app, ["compare", str(data), "--backbones", "resnet50,vgg16", "--epochs", "1",
                                 "--image-size", "32", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "error: Every backbone failed (resnet50: Cannot download resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in result.output
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert board["error"].str.contains("weights_tf_dim_ordering_tf_kernels_notop.h5").all()


def test_ctrl_c_stops_the_comparison_and_publishes_nothing(tmp_path, monkeypatch):
    import transfer.compare
    from tests.helpers import image_folder
    from transfer.errors import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("Training interrupted.")

    monkeypatch.setattr(transfer.compare, "train", interrupted)
    data = image_folder(tmp_path / "data", per_class=4)
    result = runner.invoke(app, ["compare", str(data), "--backbones", "lenet,alexnet", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 130 and "Comparison interrupted: nothing was written to" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no comparison, no staging folder left"
