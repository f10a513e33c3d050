"""`transfer cross-validate`: folds that are disjoint, stratified and cover every image once; runs
that train on the other folds and are scored on their own; a summary equal to the folds' values;
a failed fold reported while the others run."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from transfer.cli import app
from transfer.selection.cross_validation import assign_folds
from transfer.core.errors import DataError
from tests.helpers import assert_picture


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_are_disjoint_stratified_and_cover_every_image_once(folds):
    labels = pd.Series(["a"] * 23 + ["b"] * 9 + ["c"] * 5)
    assigned = assign_folds(labels, folds, seed=4)
    assert sorted(set(assigned)) == list(range(1, folds + 1))  # each image in exactly one fold, every fold used
    assert len(assigned) == len(labels)
    for label, count in labels.value_counts().items():
        per_fold = np.bincount(assigned[labels == label], minlength=folds + 1)[1:]
        assert per_fold.sum() == count and per_fold.max() - per_fold.min() <= 1, (label, per_fold)
    np.testing.assert_array_equal(assigned, assign_folds(labels, folds, seed=4))
    assert not np.array_equal(assigned, assign_folds(labels, folds, seed=5))


def test_copies_of_an_image_share_its_fold():
    labels = pd.Series(["a"] * 12 + ["b"] * 12)
    groups = [f"image-{i % 9}" for i in range(24)]  # images i and i + 9 (and i + 18) are the same bytes
    assigned = assign_folds(labels, 3, seed=1, groups=groups)
    for group in set(groups):
        assert len({fold for fold, g in zip(assigned, groups) if g == group}) == 1, group
    assert sorted(set(assigned)) == [1, 2, 3]


def test_a_class_too_small_for_the_folds_is_named():
    with pytest.raises(DataError, match="--folds 4 needs at least 4 usable images of each class; b has 3"):
        assign_folds(pd.Series(["a"] * 10 + ["b"] * 3), 4, seed=0)


@pytest.mark.slow
def test_cross_validate_trains_on_the_other_folds_summarizes_the_held_out_ones_and_reports_a_failed_fold(
    digits_dir, tmp_path, monkeypatch
):
    import transfer.training.train

    real_train = transfer.training.train.train

    def train_failing_on_fold_4(data_dir, out_dir, options, **kwargs):
        if "fold-4" in str(out_dir):
            raise DataError("the disk holding fold 4 went away")
        return real_train(data_dir, out_dir, options, **kwargs)

    monkeypatch.setattr(transfer.training.train, "train", train_failing_on_fold_4)
    data = tmp_path / "digits"
    for digit in ("0", "1", "7"):  # three classes of 12 images
        (data / digit).mkdir(parents=True)
        for path in sorted((digits_dir / digit).iterdir())[:12]:
            (data / digit / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "cv"
    result = CliRunner().invoke(app, [
        "cross-validate", str(data), "--backbones", "lenet", "--folds", "4", "--epochs", "1", "--no-augment", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "4: the disk holding fold 4 went away" in result.stdout  # in the table's failed folds
    folds = pd.read_csv(out / "folds.csv")
    assert sorted(folds["path"]) == sorted(str(p) for p in data.rglob("*.png"))
    table = pd.read_csv(out / "cv.csv").fillna({"error": ""})
    assert list(table["fold"]) == [1, 2, 3, 4] and list(table["error"].astype(bool)) == [False, False, False, True]
    for fold in (1, 2, 3):
        run = out / f"fold-{fold}" / "lenet"
        split = pd.read_csv(run / "split.csv")
        held_out = set(folds.loc[folds["fold"] == fold, "path"])
        assert set(split["path"]) == set(folds["path"]) - held_out  # trained (and stopped early) on the others only
        evaluation = json.loads((run / "evaluation" / "metrics.json").read_text())
        assert evaluation["num_images"] == len(held_out) == 9
        row = table[table["fold"] == fold].iloc[0]
        assert row["accuracy"] == pytest.approx(evaluation["accuracy"]) and row["log_loss"] == pytest.approx(evaluation["log_loss"])
        assert row["recall:7"] == pytest.approx(evaluation["per_class"]["7"]["recall"])
    ok = table[table["fold"] != 4]
    entry = json.loads((out / "cv.json").read_text())["backbones"]["lenet"]
    for metric in ("accuracy", "top_k_accuracy", "log_loss"):
        assert entry[metric]["mean"] == pytest.approx(np.mean(ok[metric]))
        assert entry[metric]["std"] == pytest.approx(np.std(ok[metric], ddof=1))
    assert entry["per_class_recall"]["0"]["mean"] == pytest.approx(np.mean(ok["recall:0"]))
    assert entry["folds_completed"] == 3 and entry["failed"] == [{"fold": 4, "error": "the disk holding fold 4 went away"}]
    assert_picture(out / "cv.png")
    config = json.loads((out / "fold-2" / "lenet" / "config.json").read_text())
    assert config["manifest"] == str(out / "fold-2" / "train.csv")  # where it was published


def test_cross_validate_refuses_bad_options_before_reading_images(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["cross-validate", str(tmp_path), "--folds", "1", "--out", str(tmp_path / "cv")])
    assert result.exit_code == 2 and "--folds must be an integer >= 2; received 1" in result.output
    result = runner.invoke(app, ["cross-validate", str(tmp_path), "--backbones", "lenet,lenet", "--out", str(tmp_path / "cv")])
    assert result.exit_code == 2 and "more than once" in result.output
    result = runner.invoke(app, ["cross-validate", str(tmp_path), "--out", str(tmp_path / "cv"), "--val-dir", str(tmp_path)])
    assert result.exit_code == 2 and "No such option: --val-dir" in result.output


def test_ctrl_c_stops_the_cross_validation_and_says_that_nothing_was_written(tmp_path, monkeypatch):
    import transfer.training.train
    from tests.helpers import image_folder
    from transfer.core.errors import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("Training interrupted. The best checkpoint so far is somewhere in the staging folder.")

    monkeypatch.setattr(transfer.training.train, "train", interrupted)
    data = image_folder(tmp_path / "data", per_class=4)
    (data / "ants" / "notes.txt").write_text("not a photo")
    result = CliRunner().invoke(app, ["cross-validate", str(data), "--backbones", "lenet", "--folds", "2", "--out", str(tmp_path / "cv")])
    assert "Skipped 1 file(s)" in result.output and "notes.txt: not an image file" in result.output
    assert result.exit_code == 130 and "Cross-validation interrupted: nothing was written to" in result.output
    assert "checkpoint" not in result.output  # no pointer into a folder that is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no output, no staging folder left"
