"""Output folders: staging, publishing, replacing only what `transfer` wrote, reading runs back."""

import json
from pathlib import Path

import pandas as pd
import pytest

from transfer import outputs
from transfer.errors import ModelLoadError, OutputExistsError


def test_force_moves_the_old_output_aside_before_the_new_one_in(tmp_path, monkeypatch):
    """publish() renames the old output aside before moving the new one in."""
    old = tmp_path / "run"
    old.mkdir()
    (old / outputs.CONFIG).write_text("{}")
    staging = outputs.staging_dir(old)
    (staging / outputs.CONFIG).write_text('{"new": true}')
    seen = []
    original = Path.rename

    def spy(self, target):
        seen.append((self.name, Path(target).name))
        return original(self, target)

    monkeypatch.setattr(Path, "rename", spy)
    outputs.publish(staging, old)
    assert json.loads((old / outputs.CONFIG).read_text()) == {"new": True}
    assert seen == [("run", ".run.old"), (".run.partial", "run")]
    assert not (tmp_path / ".run.old").exists() and not staging.exists()


def test_destination_checks(tmp_path):
    outputs.check_destination(tmp_path / "new", force=False)  # missing: fine
    (tmp_path / "empty").mkdir()
    outputs.check_destination(tmp_path / "empty", force=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        outputs.check_destination(tmp_path / "file", force=True)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="pass --force"):
        outputs.check_destination(theirs, force=False)
    with pytest.raises(OutputExistsError, match="not a transfer run or export"):
        outputs.check_destination(theirs, force=True)


def test_a_run_reads_back_what_was_written(tmp_path):
    from transfer.data import ImageFolder

    examples = pd.DataFrame({"path": ["/d/0/a.png", "/d/10/b.png"], "label": ["0", "10"], "split": ["train", "val"]})
    skipped = pd.DataFrame({"path": ["/d/0/x.txt"], "label": ["0"], "reason": ["not an image file (extension '.txt')"]})
    duplicates = pd.DataFrame({"val_path": ["/d/10/b.png"], "val_label": ["10"], "train_path": ["/d/0/a.png"],
                               "train_label": ["0"], "removed": [True]})
    run = outputs.Run(tmp_path)
    run.write_data(ImageFolder(["0", "10"], examples, skipped, duplicates))
    assert (tmp_path / "labels.txt").read_text() == "0\n10\n"
    assert run.labels() == ["0", "10"]
    assert run.split().equals(examples)  # class names such as "0" stay text
    assert run.validation_images()["path"].tolist() == ["/d/10/b.png"]
    assert run.skipped().equals(skipped)
    assert run.duplicates()["removed"].tolist() == [True]
    assert not list(tmp_path.glob(".*")), "no temporary file left behind"


def test_opening_what_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="is not a run directory"):
        outputs.Run.open(tmp_path)
    with pytest.raises(ModelLoadError, match="neither a run directory"):
        outputs.open_model(tmp_path)
    with pytest.raises(ModelLoadError, match="labels.txt is missing"):
        outputs.read_labels(tmp_path / "labels.txt")
