"""What every command that trains checks before the long work (`transfer.training.preflight`): the output's
place, the optional parts the options need, the data listed (not decoded); and that each refusal
leaves the disk as it found it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import image_folder, write_png
from transfer.core.errors import DataError, DependencyMissingError, InvalidOptionError, OutputExistsError
from transfer.training.options import TrainOptions
from transfer.training.preflight import preflight, with_labels_kind
from transfer.core.progress import Reporter


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (folders as None, files with their bytes)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def refused_and_untouched(root: Path, error, call, *fragments: str) -> str:
    """`call()` refuses with `error` whose one-line message holds `fragments`, and nothing under `root` changed."""
    before = tree(root)
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert tree(root) == before, "a refusal wrote something"
    return message


def mark(folder: Path, kind: str, extra_files: tuple[str, ...] = ()) -> Path:
    """An earlier output of `kind` written by transfer: its marker lists its files."""
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"zip")
    marker = {"tool": "transfer", "kind": kind, "version": "0", "created": "2026-01-01T00:00:00+00:00", "files": ["model.keras"]}
    (folder / ".transfer.json").write_text(json.dumps(marker))
    for name in extra_files:
        (folder / name).write_text("mine")
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    return image_folder(tmp_path / "data", classes=("ants", "bees"), per_class=3)


def test_a_free_place_and_good_data_give_the_listing_and_write_nothing(tmp_path, data):
    before = tree(tmp_path)
    listing = preflight(data, tmp_path / "run", TrainOptions(), kind="run", force=False)
    assert listing.class_names == ["ants", "bees"]
    expected = sorted(str(data / c / f"{j}.png") for c in ("ants", "bees") for j in range(3))
    assert sorted(map(os.path.abspath, listing.files["path"])) == expected
    assert sorted(listing.files["label"]) == ["ants"] * 3 + ["bees"] * 3
    assert tree(tmp_path) == before
    assert not (tmp_path / "run").exists()


def test_the_output_inside_the_data_is_refused(tmp_path, data):
    inside = data / "ants" / "run"
    message = refused_and_untouched(tmp_path, InvalidOptionError,
                                    lambda: preflight(data, inside, TrainOptions(), kind="run", force=False),
                                    f"The output {inside} is inside the data folder {data}", "Write it outside")
    assert str(data.resolve().parent / "data-outputs" / "run") in message


def test_the_output_inside_the_validation_folder_is_refused(tmp_path, data):
    val = image_folder(tmp_path / "val", classes=("ants", "bees"), per_class=2)
    refused_and_untouched(tmp_path, InvalidOptionError,
                          lambda: preflight(data, val / "run", TrainOptions(val_dir=str(val)), kind="run", force=False),
                          "is inside the data folder", str(val))


def test_the_output_inside_a_manifests_image_folders_is_refused(tmp_path, data):
    """A manifest's folders are known only once it is read: still refused, still before anything is written."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{data / c / f'{j}.png'},{c}\n" for c in ("ants", "bees") for j in range(3)))
    refused_and_untouched(tmp_path, InvalidOptionError,
                          lambda: preflight(None, data / "run", TrainOptions(manifest=str(manifest)), kind="run", force=False),
                          "is inside the data folder")
    assert preflight(None, tmp_path / "run", TrainOptions(manifest=str(manifest)), kind="run", force=False).class_names == ["ants", "bees"]


def test_a_folder_not_written_by_transfer_is_never_replaced(tmp_path, data):
    theirs = tmp_path / "photos"
    (theirs / "holiday.txt").parent.mkdir()
    (theirs / "holiday.txt").write_text("keep me")
    for force in (False, True):
        refused_and_untouched(tmp_path, OutputExistsError,
                              lambda: preflight(data, theirs, TrainOptions(), kind="run", force=force),
                              f"{theirs} already exists", "not written by transfer", "holiday.txt")


def test_an_earlier_run_is_replaced_only_with_force(tmp_path, data):
    earlier = mark(tmp_path / "run", "run")
    refused_and_untouched(tmp_path, OutputExistsError, lambda: preflight(data, earlier, TrainOptions(), kind="run", force=False),
                          "an earlier transfer run", "--force")
    before = tree(tmp_path)
    assert preflight(data, earlier, TrainOptions(), kind="run", force=True).class_names == ["ants", "bees"]
    assert tree(tmp_path) == before, "preflight only checks: the earlier run is replaced when the new one is published"


def test_force_does_not_replace_another_kind_or_files_added_by_hand(tmp_path, data):
    comparison = mark(tmp_path / "cmp", "comparison")
    refused_and_untouched(tmp_path, OutputExistsError, lambda: preflight(data, comparison, TrainOptions(), kind="run", force=True),
                          "an earlier transfer comparison", "--force replaces only an earlier transfer run")
    added = mark(tmp_path / "run", "run", extra_files=("notes.txt",))
    refused_and_untouched(tmp_path, OutputExistsError, lambda: preflight(data, added, TrainOptions(), kind="run", force=True),
                          "notes.txt", "nothing is replaced")


def test_a_file_in_place_of_the_output_folder_is_refused(tmp_path, data):
    file = write_png(tmp_path / "run")
    refused_and_untouched(tmp_path, OutputExistsError, lambda: preflight(data, file, TrainOptions(), kind="run", force=True),
                          f"{file} exists and is a file")


def test_a_non_chief_worker_does_not_check_the_destination(tmp_path, data):
    """Only the chief publishes: a worker's listing is made whatever is at the output."""
    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "holiday.txt").write_text("keep me")
    assert preflight(data, theirs, TrainOptions(), kind="run", force=False, worker=1).class_names == ["ants", "bees"]
    assert (theirs / "holiday.txt").read_text() == "keep me"


def test_a_missing_optional_part_is_named_before_the_data_is_read(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    missing_data = tmp_path / "no-such-data"  # would be refused too: the extra is said first
    refused_and_untouched(tmp_path, DependencyMissingError,
                          lambda: preflight(missing_data, tmp_path / "run", TrainOptions(tensorboard=True), kind="run", force=False),
                          "tensorboard", "pip install 'keras-transfer[tensorboard]'")


def test_missing_data_is_refused_without_creating_the_outputs_parent(tmp_path):
    """The output's folder `new/deeper` does not exist yet; a refusal must not leave it created
    (the module promises that a mistake is answered before anything is written)."""
    out = tmp_path / "new" / "deeper" / "run"
    refused_and_untouched(tmp_path, DataError, lambda: preflight(tmp_path / "no-such-data", out, TrainOptions(), kind="run", force=False),
                          "Data folder", "no-such-data", "does not exist")
    assert not (tmp_path / "new").exists()


def test_no_data_or_both_kinds_of_data_are_refused(tmp_path, data):
    refused_and_untouched(tmp_path, InvalidOptionError, lambda: preflight(None, tmp_path / "run", TrainOptions(), kind="run", force=False),
                          "No data given", "DATA_DIR", "--manifest FILE.csv")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n")
    refused_and_untouched(tmp_path, InvalidOptionError,
                          lambda: preflight(data, tmp_path / "run", TrainOptions(manifest=str(manifest)), kind="run", force=False),
                          f"Received both DATA_DIR {data} and --manifest {manifest}")


def test_a_folder_with_one_class_is_refused(tmp_path):
    one = image_folder(tmp_path / "one", classes=("ants",), per_class=2)
    refused_and_untouched(tmp_path, DataError, lambda: preflight(one, tmp_path / "run", TrainOptions(), kind="run", force=False),
                          "1 class subfolder(s) (ants)", "at least 2")


def multi_label_manifest(tmp_path: Path) -> Path:
    """Six images in `set/imgs/` (so `set/` is the data folder) labelled with zero to two of cat and dog."""
    paths = [write_png(tmp_path / "set" / "imgs" / f"{i}.png", color=(30 * i, 0, 0)) for i in range(6)]
    labels = ["cat;dog", "cat", "", "dog", "cat;dog", "dog"]
    manifest = tmp_path / "multi.csv"
    manifest.write_text("path,labels\n" + "".join(f"{p},{l}\n" for p, l in zip(paths, labels)))
    return manifest


def test_multi_label_on_single_label_data_is_refused(tmp_path, data):
    refused_and_untouched(tmp_path, DataError,
                          lambda: preflight(data, tmp_path / "run", TrainOptions(multi_label=True), kind="run", force=False),
                          "--multi-label", "one label per image", "labels column")


def test_auto_class_weight_on_a_multi_label_manifest_is_refused(tmp_path):
    manifest = multi_label_manifest(tmp_path)
    options = TrainOptions(manifest=str(manifest), class_weight="auto")
    refused_and_untouched(tmp_path, InvalidOptionError, lambda: preflight(None, tmp_path / "run", options, kind="run", force=False),
                          "--class-weight auto", "is multi-label", "Drop --class-weight auto")


class Recorder(Reporter):
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def test_a_labels_column_switches_multi_label_on_and_says_so_once(tmp_path):
    manifest = multi_label_manifest(tmp_path)
    options = TrainOptions(manifest=str(manifest))
    listing = preflight(None, tmp_path / "run", options, kind="run", force=False)
    assert listing.multi_label and listing.class_names == ["cat", "dog"]
    recorder = Recorder()
    switched = with_labels_kind(options, listing, recorder)
    assert switched.multi_label and not options.multi_label
    assert len(recorder.lines) == 1 and "multi-label" in recorder.lines[0]
    already = with_labels_kind(switched, listing, recorder)
    assert already is switched and len(recorder.lines) == 1, "said once, not again when already on"


def test_single_label_data_keeps_the_options_as_they_are(tmp_path, data):
    listing = preflight(data, tmp_path / "run", TrainOptions(), kind="run", force=False)
    recorder = Recorder()
    options = TrainOptions()
    assert with_labels_kind(options, listing, recorder) is options and recorder.lines == []
