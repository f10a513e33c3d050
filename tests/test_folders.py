"""A listing made ready to train on: images checked, split, deduplicated, weighted; streamed batches."""

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import image_folder, make_folder, write_image, write_png
from transfer.data.folders import find_unreadable, iter_decoded_batches, prepare
from transfer.core.errors import DataError
from transfer.data.sources import list_folder


def jpeg_bytes(side: int) -> bytes:
    """A noisy JPEG, so that half of it is a truncated file and not a valid smaller one."""
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_unreadable_files_are_reported_by_path(tmp_path):
    good = str(write_image(tmp_path / "good.png"))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    failures = find_unreadable([good, str(empty), str(corrupt)], 16)
    assert set(failures) == {str(empty), str(corrupt)}
    assert all(reason for reason in failures.values())


def test_streamed_batches_keep_order_and_account_for_every_file(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", color=(i, i, i))) for i in range(7)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    paths.insert(3, str(bad))
    batches = list(iter_decoded_batches(paths, 8, batch_size=3))
    seen = [p for b in batches for p in [f[0] for f in b.failed] + b.paths]
    assert sorted(seen) == sorted(paths)
    assert [p for b in batches for p in b.paths] == [p for p in paths if p != str(bad)]
    assert [f[0] for b in batches for f in b.failed] == [str(bad)]
    assert max(len(b.paths) for b in batches) <= 3


def test_stratified_split_is_reproducible_and_keeps_every_class(tmp_path):
    root = make_folder(tmp_path, per_class=10)
    first = prepare(list_folder(root), image_size=8, val_split=0.2, seed=3)
    again = prepare(list_folder(root), image_size=8, val_split=0.2, seed=3)
    assert first.examples.equals(again.examples)
    assert first.counts().to_dict() == {
        "train": {"a_class": 8, "b_class": 8}, "val": {"a_class": 2, "b_class": 2}, "skipped": {"a_class": 0, "b_class": 0},
    }


def test_corrupt_file_in_a_class_is_skipped_with_reason(tmp_path):
    root = make_folder(tmp_path, per_class=6)
    (root / "a_class" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    folder = prepare(list_folder(root), image_size=8, val_split=0.5, seed=0)
    assert len(folder.examples) == 12
    assert folder.skipped["path"].str.endswith("broken.jpg").tolist() == [True]
    assert folder.counts()["skipped"].to_dict() == {"a_class": 1, "b_class": 0}


def test_unreadable_files_are_listed_by_path_with_reason_per_class(tmp_path):
    root = image_folder(tmp_path / "data", per_class=4)
    (root / "ants" / "empty.jpg").write_bytes(b"")
    photo = jpeg_bytes(200)
    (root / "ants" / "truncated.jpg").write_bytes(photo[: len(photo) // 2])
    (root / "bees" / "text.png").write_text("hello")
    (root / "bees" / ".DS_Store").write_bytes(b"\0")
    folder = prepare(list_folder(root), image_size=8, val_split=0.5)
    reasons = {os.path.basename(p): r for p, r in zip(folder.skipped["path"], folder.skipped["reason"])}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["truncated.jpg"] and reasons["text.png"] == "not a JPEG, PNG, GIF, BMP or WebP file (nor HEIC or AVIF)"
    assert reasons[".DS_Store"] == "hidden file"
    assert folder.counts()["skipped"].to_dict() == {"ants": 2, "bees": 2}
    assert len(folder.examples) == 8


def test_a_class_left_with_one_usable_image_is_an_error_naming_it(tmp_path):
    root = image_folder(tmp_path / "data", per_class=3)
    for name in ("1.png", "2.png"):
        (root / "bees" / name).write_bytes(b"junk")
    with pytest.raises(DataError, match=r"bees: 1 usable, 2 skipped"):
        prepare(list_folder(root), image_size=8)


def test_duplicates_across_train_and_val_are_found_and_removed_with_dedupe(tmp_path):
    train = image_folder(tmp_path / "train", per_class=4)
    val = tmp_path / "val"
    for name in ("ants", "bees"):
        write_png(val / name / "fresh.png", color=(1, 2, 3) if name == "ants" else (3, 2, 1))
    shutil.copy(train / "bees" / "2.png", val / "bees" / "copy of 2.png")
    shutil.copy(train / "ants" / "1.png", val / "bees" / "mislabelled.png")
    kept = prepare(list_folder(train, val), image_size=8)
    assert sorted(os.path.basename(p) for p in kept.duplicates["val_path"]) == ["copy of 2.png", "mislabelled.png"]
    assert set(kept.duplicates["train_label"]) == {"ants", "bees"} and not kept.duplicates["removed"].any()
    assert len(kept.examples[kept.examples["split"] == "val"]) == 4
    deduped = prepare(list_folder(train, val), image_size=8, dedupe=True)
    assert deduped.duplicates["removed"].all()
    assert sorted(os.path.basename(p) for p in deduped.examples[deduped.examples["split"] == "val"]["path"]) == ["fresh.png", "fresh.png"]


def test_balanced_class_weights_are_n_over_classes_times_count(tmp_path):
    """Training counts a: 2, b: 6, c: 2 (N = 10, 3 classes): N / (3 * count) = 10/6, 10/18, 10/6."""
    train = image_folder(tmp_path / "train", classes=("a", "c"), per_class=2)
    image_folder(train, classes=("b",), per_class=6)
    val = image_folder(tmp_path / "val", classes=("a", "b", "c"), per_class=1)
    folder = prepare(list_folder(train, val), image_size=8)
    assert folder.class_weights() == pytest.approx({0: 10 / 6, 1: 10 / 18, 2: 10 / 6})
    assert folder.imbalance() == 3.0


def test_every_class_gets_a_validation_image(tmp_path):
    """A class of 2 images gives 1 to validation whatever --val-split; 10 images at 0.2 give 2."""
    root = image_folder(tmp_path / "data", classes=("big",), per_class=10)
    image_folder(root, classes=("pair",), per_class=2)
    for val_split in (0.05, 0.2, 0.9):
        counts = prepare(list_folder(root), image_size=8, val_split=val_split).counts()
        assert counts.loc["pair", "val"] == 1 and counts.loc["pair", "train"] == 1
    assert prepare(list_folder(root), image_size=8, val_split=0.2).counts().loc["big", "val"] == 2


def test_a_class_too_small_after_skipping_names_its_skipped_files(tmp_path):
    root = image_folder(tmp_path / "data", per_class=2)
    (root / "bees" / "1.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"bees: 1 usable, 1 skipped \(.*bees/1.png: empty file \(0 bytes\)\)"):
        prepare(list_folder(root), image_size=8)


def test_heic_and_avif_photos_are_used_and_a_heic_without_its_extra_is_skipped_naming_it(tmp_path, monkeypatch):
    import sys

    import pillow_heif

    pillow_heif.register_heif_opener()
    root = make_folder(tmp_path, per_class=3)
    for name, colour in (("a_class", (250, 10, 10)), ("b_class", (10, 10, 250))):
        Image.new("RGB", (16, 16), colour).save(root / name / "phone.heic", format="HEIF", quality=95)
        Image.new("RGB", (16, 16), colour).save(root / name / "camera.AVIF", format="AVIF", quality=95)
    folder = prepare(list_folder(root), image_size=8)
    assert folder.skipped.empty and folder.examples["path"].str.endswith(("phone.heic", "camera.AVIF")).sum() == 4
    pixels = {p: b for batch in iter_decoded_batches(folder.examples["path"].tolist(), 8, 16) for p, b in zip(batch.paths, batch.pixels)}
    np.testing.assert_allclose(pixels[str(root / "b_class" / "phone.heic")].mean(axis=(0, 1)), (10, 10, 250), atol=6)

    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if the heic extra were not installed
    without = prepare(list_folder(root), image_size=8)
    reasons = dict(zip(without.skipped["path"], without.skipped["reason"]))
    assert sorted(reasons) == [str(root / name / "phone.heic") for name in ("a_class", "b_class")]
    assert all("pip install 'keras-transfer[heic]'" in reason for reason in reasons.values())
