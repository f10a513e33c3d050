"""The experiment skeleton (`transfer.selection.experiments`) that compare, cross-validate, audit and
probe share: options checked for every backbone before any image is read, the output published only
when whole, one interrupted message, one rule for "every part failed"."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import image_folder
from transfer.core.errors import (
    ComparisonFailedError, CrossValidationFailedError, InvalidOptionError, ProbeFailedError, TrainingInterrupted,
)
from transfer.outputs import layout
from transfer.selection.experiments import Experiment, require_some_success
from transfer.training.options import TrainOptions


def _files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_output_is_published_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "cmp"
    experiment = Experiment("comparison", out, TrainOptions())
    with experiment.staged() as staging:
        (staging / "leaderboard.csv").write_text("first")
        assert not out.exists(), "nothing is published while the parts run"
    assert (out / "leaderboard.csv").read_text() == "first"
    assert not layout.partial_dir(out).exists()


def test_an_interruption_writes_nothing_and_says_so(tmp_path):
    """The earlier output stays byte for byte; the staging folder is gone; the message is the one
    message, naming the output and what was discarded, and the training's own is not shown."""
    out = tmp_path / "cv"
    experiment = Experiment("cross-validation", out, TrainOptions(), force=True, discarded="the unfinished folds' runs",
                            again="Run the command again.")
    with experiment.staged() as staging:
        (staging / "cv.csv").write_text("earlier")
    before = _files(out)
    with pytest.raises(TrainingInterrupted) as caught:
        with experiment.staged() as staging:
            (staging / "cv.csv").write_text("half")
            raise TrainingInterrupted("Training interrupted. The best checkpoint is in the staging folder.")
    assert str(caught.value) == (
        f"Cross-validation interrupted: nothing was written to {out} (an earlier cross-validation there is unchanged), "
        f"and the unfinished folds' runs were discarded. Run the command again."
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__, "the training's message is not shown"
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cv"], "no staging folder left"


def test_other_errors_pass_through_staged_unchanged(tmp_path):
    out = tmp_path / "probe"
    with pytest.raises(ValueError, match="^a bug$"):
        with Experiment("probe", out, TrainOptions()).staged():
            raise ValueError("a bug")
    assert list(tmp_path.iterdir()) == []


def test_the_audit_says_the_one_interrupted_message(tmp_path, monkeypatch):
    """The audit's baseline trains per fold: a Ctrl-C there is the skeleton's message, and nothing is written."""
    import transfer.training.train

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("Training interrupted. Continue it with `transfer train --resume RUN`.")

    monkeypatch.setattr(transfer.training.train, "train", interrupted)
    pytest.importorskip("cleanlab")
    from transfer.selection.audit import audit

    data = image_folder(tmp_path / "data", per_class=4)
    with pytest.raises(TrainingInterrupted, match=r"^Audit interrupted: nothing was written to .*audit \(an earlier audit there is unchanged\)"):
        audit(data, tmp_path / "audit", TrainOptions(backbone="lenet"), folds=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def _rows(*errors: str) -> pd.DataFrame:
    return pd.DataFrame({"backbone": [f"b{i}" for i in range(len(errors))], "error": list(errors)})


def test_every_part_failing_is_the_commands_own_error_with_the_reasons():
    with pytest.raises(ComparisonFailedError) as caught:
        require_some_success(_rows("No weights.", "Too big"), ComparisonFailedError, "Every backbone failed", "See OUT.")
    assert str(caught.value) == "Every backbone failed (b0: No weights; b1: Too big). See OUT."
    with pytest.raises(CrossValidationFailedError, match=r"^Every fold failed \(first\)\. In OUT\.$"):
        require_some_success(_rows("first", "second"), CrossValidationFailedError, "Every fold failed", "In OUT.",
                             reasons=lambda rows: [rows["error"].iloc[0]])
    with pytest.raises(ProbeFailedError, match=r"^None \(\)\. Add one\.$"):
        require_some_success(_rows(), ProbeFailedError, "None", "Add one.")


def test_one_part_that_succeeds_is_enough():
    require_some_success(_rows("No weights.", ""), ComparisonFailedError, "Every backbone failed", "See OUT.")
    require_some_success(_rows(""), ComparisonFailedError, "Every backbone failed", "See OUT.")


@pytest.mark.parametrize("command", ["compare", "cross_validate", "probe"])
def test_every_backbones_options_are_checked_before_any_image_is_read(tmp_path, monkeypatch, command):
    """`--unfreeze bogus` is dropped for a baseline (lenet, first) and refused for a pretrained
    backbone (resnet50, second): only a check of every backbone finds it before the images are read."""
    import transfer.data.folders
    from transfer.selection.compare import compare
    from transfer.selection.cross_validation import cross_validate
    from transfer.selection.probe import probe

    def read(*args, **kwargs):
        raise AssertionError("an image was read before every backbone's options were checked")

    monkeypatch.setattr(transfer.data.folders, "prepare", read)
    monkeypatch.setattr(transfer.data.folders, "find_unreadable", read)
    data = image_folder(tmp_path / "data", per_class=4)
    run = {"compare": compare, "cross_validate": cross_validate, "probe": probe}[command]
    options = TrainOptions(unfreeze="bogus")
    options.for_backbone("lenet", "split.csv").resolved()  # the first backbone alone is fine
    with pytest.raises(InvalidOptionError, match="--unfreeze"):
        run(data, tmp_path / "out", ["lenet", "resnet50"], options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "nothing written"
