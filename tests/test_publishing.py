"""Output folders: staging, publishing, replacing only what `transfer` wrote, reading runs back."""

import errno
import json
from pathlib import Path

import pandas as pd
import pytest

from transfer.outputs import artifacts, layout, publishing
from transfer.core.errors import InvalidOptionError, ModelLoadError, OutputExistsError, OutputLocationError


def test_force_moves_the_old_output_aside_before_the_new_one_in(tmp_path, monkeypatch):
    """publish() renames the old output aside before moving the new one in."""
    old = tmp_path / "run"
    old.mkdir()
    (old / layout.CONFIG).write_text("{}")
    staging = publishing.staging_dir(old, "run")
    (staging / layout.CONFIG).write_text('{"new": true}')
    seen = []
    original = Path.rename

    def spy(self, target):
        seen.append((self.name, Path(target).name))
        return original(self, target)

    monkeypatch.setattr(Path, "rename", spy)
    publishing.publish(staging, old)
    assert json.loads((old / layout.CONFIG).read_text()) == {"new": True}
    assert seen == [("run", ".run.old"), (".run.partial", "run")]
    assert not (tmp_path / ".run.old").exists() and not staging.exists()


def earlier(path, kind):
    """An output of `kind` as `transfer` leaves it: the marker first, then its files."""
    staging = publishing.staging_dir(path, kind)
    (staging / "some-result.csv").write_text("x\n")
    (staging / "variables").mkdir()
    (staging / "variables" / "data-0").write_text("weights")
    publishing.publish(staging, path)
    return path


def test_force_refuses_an_output_that_holds_what_the_user_put_there(tmp_path):
    """A data folder, an export, notes: anything in an earlier run that transfer did not write."""
    run = earlier(tmp_path / "run", "run")
    earlier(run / "evaluation", "evaluation")  # transfer's own, nested: fine
    (run / "report.html").write_text(f'<meta name="generator" content="{layout.REPORT_GENERATOR} 0.1.0">')
    publishing.check_destination(run, kind="run", force=True)
    (run / "mydata" / "ants").mkdir(parents=True)
    (run / "mydata" / "ants" / "1.jpg").write_bytes(b"photo")
    (run / "variables" / "mine.txt").write_text("notes")
    (run / "evaluation" / "extra.csv").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"also holds what transfer did not write \(evaluation/extra.csv, mydata/ants/1.jpg, variables/mine.txt\)"):
        publishing.check_destination(run, kind="run", force=True)


def test_a_symbolic_link_as_output_is_refused(tmp_path):
    real = earlier(tmp_path / "real", "run")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OutputExistsError, match="is a symbolic link"):
        publishing.check_destination(tmp_path / "link", kind="run", force=True)


def test_marker_is_the_first_file_and_names_the_kind(tmp_path):
    staging = publishing.staging_dir(tmp_path / "export", "export")
    assert [p.name for p in staging.iterdir()] == [layout.MARKER]
    marker = json.loads((staging / layout.MARKER).read_text())
    assert marker["tool"] == "transfer" and marker["kind"] == "export" and marker["version"] and marker["created"]


def test_force_replaces_only_an_earlier_output_of_the_same_kind(tmp_path):
    run = earlier(tmp_path / "run", "run")
    publishing.check_destination(run, kind="run", force=True)
    with pytest.raises(OutputExistsError, match=r"already exists \(an earlier transfer run\).*pass --force"):
        publishing.check_destination(run, kind="run", force=False)
    with pytest.raises(OutputExistsError, match="is an earlier transfer run; --force replaces only an earlier transfer export"):
        publishing.check_destination(run, kind="export", force=True)


def test_a_folder_the_user_made_is_never_replaced(tmp_path):
    theirs = tmp_path / "myproj"
    theirs.mkdir()
    (theirs / "config.json").write_text("{}")  # what the old rule took for a run
    (theirs / "thesis.tex").write_text("chapter 1")
    with pytest.raises(OutputExistsError, match=r"not written by transfer \(holding config.json, thesis.tex\)"):
        publishing.check_destination(theirs, kind="export", force=True)
    assert (theirs / "thesis.tex").read_text() == "chapter 1"


def test_missing_and_empty_destinations_and_files_in_the_way(tmp_path):
    publishing.check_destination(tmp_path / "new" / "deeper", kind="run", force=False)
    assert not (tmp_path / "new").exists(), "a check creates nothing that a refusal would leave behind"
    (tmp_path / "empty").mkdir()
    publishing.check_destination(tmp_path / "empty", kind="run", force=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="exists and is a file; the run is a folder"):
        publishing.check_destination(tmp_path / "file", kind="run", force=True)


def test_an_output_inside_the_data_is_refused(tmp_path):
    (tmp_path / "data" / "ants").mkdir(parents=True)
    with pytest.raises(InvalidOptionError, match="is inside the data folder"):
        publishing.check_destination(tmp_path / "data" / "run1", kind="run", force=False, data=(tmp_path / "data", None))
    publishing.check_destination(tmp_path / "run1", kind="run", force=False, data=(tmp_path / "data",))


def test_a_location_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(publishing.tempfile, "TemporaryFile", read_only)
    with pytest.raises(OutputLocationError, match=f"Cannot write to {tmp_path}: Read-only file system"):
        publishing.check_destination(tmp_path / "run", kind="run", force=False)


def test_a_report_replaces_only_a_report(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes")
    with pytest.raises(OutputExistsError, match="not written by transfer"):
        publishing.check_destination(notes, kind="report", force=True)
    ours = tmp_path / "report.html"
    ours.write_text(f'<html><head><meta name="generator" content="{layout.REPORT_GENERATOR} 0.1.0">')
    publishing.check_destination(ours, kind="report", force=True)
    with pytest.raises(OutputExistsError, match="pass --force"):
        publishing.check_destination(ours, kind="report", force=False)
    with pytest.raises(OutputExistsError, match="is a folder; the report output is one file"):
        publishing.check_destination(tmp_path, kind="report", force=True)


def test_a_failed_write_leaves_the_earlier_output_and_no_staging(tmp_path):
    old = earlier(tmp_path / "evaluation", "evaluation")
    with pytest.raises(OSError):
        with publishing.staged(old, "evaluation") as staging:
            (staging / "metrics.json").write_text("{}")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (old / "some-result.csv").is_file() and not (old / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation"]


def test_a_failed_single_file_write_leaves_no_temporary(tmp_path):
    with pytest.raises(OSError):
        with publishing.atomic_path(tmp_path / "report.html") as temporary:
            temporary.write_text("<html>")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_run_reads_back_what_was_written(tmp_path):
    from transfer.data.folders import ImageFolder

    examples = pd.DataFrame({"path": ["/d/0/a.png", "/d/10/b.png"], "label": ["0", "10"], "split": ["train", "val"]})
    skipped = pd.DataFrame({"path": ["/d/0/x.txt"], "label": ["0"], "reason": ["not an image file (extension '.txt')"]})
    duplicates = pd.DataFrame({"val_path": ["/d/10/b.png"], "val_label": ["10"], "train_path": ["/d/0/a.png"],
                               "train_label": ["0"], "removed": [True]})
    run = artifacts.Run(tmp_path)
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
        artifacts.Run.open(tmp_path)
    with pytest.raises(ModelLoadError, match="neither a run directory"):
        artifacts.open_model(tmp_path)
    with pytest.raises(ModelLoadError, match="labels.txt is missing"):
        publishing.read_labels(tmp_path / "labels.txt")


def test_an_export_put_inside_a_run_is_not_the_runs_to_delete(tmp_path):
    run = earlier(tmp_path / "run", "run")
    earlier(run / "export", "export")
    with pytest.raises(OutputExistsError, match=r"also holds what transfer did not write \(export\)"):
        publishing.check_destination(run, kind="run", force=True)
    comparison = earlier(tmp_path / "comparison", "comparison")
    earlier(comparison / "runs" / "lenet", "run")  # a comparison's own runs are its own
    publishing.check_destination(comparison, kind="comparison", force=True)


def test_two_commands_cannot_write_one_output_at_once(tmp_path):
    """The first to claim `runs/a` holds it until it publishes; another process is told in one line."""
    import subprocess
    import sys

    from transfer.outputs.publishing import lock_destination, staging_dir

    out = tmp_path / "runs" / "a"
    staging = staging_dir(out, "run")  # this process claims it
    other = f"from transfer.outputs.publishing import lock_destination; lock_destination({str(out)!r})"
    refused = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True)
    assert refused.returncode != 0 and "Another transfer command is writing" in refused.stderr
    lock_destination(out)  # the holder itself may ask again
    publishing.publish(staging, out)  # publishing releases it
    assert subprocess.run([sys.executable, "-c", other], capture_output=True, text=True).returncode == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["a"], "nothing is left beside the output"
