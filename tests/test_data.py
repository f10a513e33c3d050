import numpy as np
import pytest
from PIL import Image

from transfer.data import find_unreadable, iter_decoded_batches, prepare
from transfer.errors import DataError
from transfer.preprocessing import decode_image
from transfer.sources import list_classes, list_folder


def write_image(path, mode="RGB", size=(20, 16), color=(200, 30, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def make_folder(root, classes=("b_class", "a_class"), per_class=5):
    for i, name in enumerate(classes):
        for j in range(per_class):
            write_image(root / name / f"{j}.png", color=(40 * i, 10 * j, 100))
    return root


def test_classes_are_sorted(tmp_path):
    assert list_classes(make_folder(tmp_path)) == ["a_class", "b_class"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: (root / "only").mkdir(parents=True), "1 class subfolder"),
        (lambda root: write_image(root / "loose.jpg"), "holds images directly"),
    ],
)
def test_structure_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        list_classes(root)


def test_hidden_and_non_image_files_are_skipped_and_reported(tmp_path):
    root = make_folder(tmp_path)
    (root / "a_class" / ".DS_Store").write_bytes(b"\0\0")
    (root / "a_class" / "notes.txt").write_text("hi")
    write_image(root / "a_class" / "nested" / "deep.JPG", fmt="JPEG")
    listing = list_folder(root)
    images, skipped = listing.files, listing.skipped
    assert len(images) == 11
    assert any(p.endswith("nested/deep.JPG") for p in images["path"])
    assert set(skipped["label"]) == {"a_class"}
    reasons = dict(zip([p.rsplit("/", 1)[-1] for p in skipped["path"]], skipped["reason"]))
    assert reasons == {".DS_Store": "hidden file", "notes.txt": "not an image file (extension '.txt')"}


FORMATS_AND_MODES = [
    (fmt, mode)
    for fmt in ("PNG", "BMP", "GIF", "JPEG")
    for mode in ("L", "P", "RGBA", "RGB")
    if not (fmt == "JPEG" and mode in ("P", "RGBA"))  # JPEG files cannot hold palette or alpha
]


@pytest.mark.parametrize("fmt, mode", FORMATS_AND_MODES)
def test_every_format_and_mode_decodes_to_rgb(tmp_path, fmt, mode):
    path = write_image(tmp_path / f"x.{fmt.lower()}", mode=mode, fmt=fmt)
    pixels = decode_image(path.read_bytes(), 12).numpy()
    assert pixels.shape == (12, 12, 3) and pixels.dtype == np.float32
    assert 0 <= pixels.min() and pixels.max() <= 255


def test_grayscale_becomes_equal_rgb_channels(tmp_path):
    path = write_image(tmp_path / "g.png", mode="L", color=(90, 90, 90))
    pixels = decode_image(path.read_bytes(), 4).numpy()
    np.testing.assert_allclose(pixels, 90, atol=1)


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


def test_validation_folder_with_other_classes_is_refused(tmp_path):
    train = make_folder(tmp_path / "train")
    val = make_folder(tmp_path / "val", classes=("a_class", "c_class"))
    with pytest.raises(DataError, match="same class subfolders"):
        list_folder(train, val)
