"""Listing a dataset: class folders (sorted, nested, links, hidden files) and CSV manifests."""

import os

import pytest

from tests.helpers import image_folder, make_folder, write_image, write_png
from transfer.data.folders import prepare
from transfer.core.errors import DataError
from transfer.data.sources import list_classes, list_folder, read_manifest, walk_images


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
    assert reasons[".DS_Store"] == "hidden file" and reasons["notes.txt"].startswith("not an image file (extension '.txt'")


def test_validation_folder_with_other_classes_is_refused(tmp_path):
    train = make_folder(tmp_path / "train")
    val = make_folder(tmp_path / "val", classes=("a_class", "c_class"))
    with pytest.raises(DataError, match="same class subfolders"):
        list_folder(train, val)


def test_symlinks_are_followed_once_and_broken_ones_reported(tmp_path):
    elsewhere = image_folder(tmp_path / "elsewhere", classes=("extra",), per_class=3)
    root = image_folder(tmp_path / "data", per_class=2)
    (root / "ants" / "linked.png").symlink_to(root / "bees" / "0.png")
    (root / "ants" / "more").symlink_to(elsewhere / "extra", target_is_directory=True)
    (root / "ants" / "more-again").symlink_to(elsewhere / "extra", target_is_directory=True)
    (root / "ants" / "loop").symlink_to(root / "ants", target_is_directory=True)
    (root / "bees" / "gone.png").symlink_to(tmp_path / "deleted.png")
    listing = list_folder(root)
    ants = listing.files[listing.files["label"] == "ants"]["path"].tolist()
    assert len(ants) == 2 + 3  # own, a linked folder out of the data listed once (not via the loop)
    from transfer.evaluation.prediction import collect_images

    # predict has no classes: it reads the linked bee too, and the rest alike
    assert sorted(map(os.path.abspath, collect_images([root / "ants"])[0])) == sorted(ants + [str(root / "ants" / "linked.png")])
    assert dict(zip(listing.skipped["path"], listing.skipped["reason"])) == {
        str(root / "ants" / "linked.png"): f"a link to {(root / 'bees' / '0.png').resolve()}, inside the data folder but "
                                           f"outside this class's folder (not followed: its images are in their own class)",
        str(root / "bees" / "gone.png"): f"broken symbolic link (target {tmp_path / 'deleted.png'} does not exist)",
    }


@pytest.mark.parametrize("link", ["root", "other class", "val folder", "file twice"])
def test_a_link_back_into_the_data_counts_no_image_twice_or_under_another_class(tmp_path, link):
    """A class folder holding a link to the data folder, another class or the validation folder: every
    image once, under its own class, each skipped link listed with its reason."""
    root = image_folder(tmp_path / "data", per_class=3)
    val = image_folder(tmp_path / "val", per_class=2)
    target = {"root": root, "other class": root / "bees", "val folder": val, "file twice": root / "ants" / "0.png"}[link]
    name = "link" if target.is_dir() else "link.png"
    (root / "ants" / name).symlink_to(target, target_is_directory=target.is_dir())
    listing = list_folder(root, val)
    files = listing.files
    assert files.groupby(["split", "label"]).size().to_dict() == {
        ("train", "ants"): 3, ("train", "bees"): 3, ("val", "ants"): 2, ("val", "bees"): 2,
    }
    assert files["path"].map(os.path.realpath).is_unique, "no file is read twice"
    assert all(os.path.realpath(path).split(os.sep)[-2] == label for path, label in zip(files["path"], files["label"]))
    assert listing.skipped["path"].tolist() == [str(root / "ants" / name)]
    reason = listing.skipped["reason"].iloc[0]
    assert ("read once" if link == "file twice" else "outside this class's folder") in reason


def test_nested_folders_belong_to_their_class(tmp_path):
    root = image_folder(tmp_path / "data", per_class=2)
    write_png(root / "ants" / "2024" / "june" / "deep.png")
    listing = list_folder(root)
    assert listing.files.groupby("label").size().to_dict() == {"ants": 3, "bees": 2}


def test_manifest_with_relative_paths_and_split(tmp_path):
    image_folder(tmp_path / "images", per_class=3)
    rows = [f"images/{c}/{j}.png,{c},{'val' if j == 0 else 'train'}" for c in ("bees", "ants") for j in range(3)]
    (tmp_path / "list.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    listing = read_manifest(tmp_path / "list.csv")
    assert listing.class_names == ["ants", "bees"]
    assert listing.files["path"].map(os.path.isabs).all()
    folder = prepare(listing, image_size=8)
    assert folder.counts()[["train", "val"]].to_dict() == {"train": {"ants": 2, "bees": 2}, "val": {"ants": 1, "bees": 1}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "not a readable CSV file"),
        ("file,label\nx.png,a\n", "lacks path"),
        ("path,label\n,a\nx.png,\n", "an empty path or label on 2 line(s): 2, 3"),
        ("path,label\n", "lists no images"),
    ],
)
def test_manifest_errors(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(tmp_path / "m.csv")


def test_manifest_with_a_single_label(tmp_path):
    write_png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,ants\n")
    with pytest.raises(DataError, match=r"1 label\(s\) \(ants\)"):
        read_manifest(tmp_path / "m.csv")


def test_one_rule_for_which_files_are_images(tmp_path):
    """WebP is read (TensorFlow decodes it in the graph), AVIF too (Pillow decodes it); TIFF is named, with what to do."""
    root = tmp_path / "ants"
    write_image(root / "a.webp", fmt="WEBP")
    write_image(root / "b.tif", fmt="TIFF")
    (root / "c.avif").write_bytes(b"\0\0\0\x1cftypavif")
    images, others = walk_images(root)
    assert [os.path.basename(p) for p in images] == ["a.webp", "c.avif"]
    reasons = {os.path.basename(p): r for p, r in others}
    assert reasons["b.tif"].startswith("TIF images are not read") and "convert to PNG or JPEG" in reasons["b.tif"]
    assert set(reasons) == {"b.tif"}


def test_the_marker_of_a_folder_transfer_wrote_is_not_a_skipped_file(tmp_path):
    from transfer.outputs.layout import MARKER

    image_folder(tmp_path / "digits", per_class=2)
    (tmp_path / "digits" / MARKER).write_text("{}")
    images, others = walk_images(tmp_path / "digits")
    assert len(images) == 4 and others == []


def test_folders_named_like_splits_are_refused_with_the_right_command_unless_insisted_on(tmp_path):
    from transfer.data.sources import list_folder

    for split in ("train", "val"):
        image_folder(tmp_path / "data" / split)
    with pytest.raises(DataError) as refused:
        list_folder(tmp_path / "data")
    message = str(refused.value)
    assert f"{tmp_path / 'data' / 'train'} --val-dir {tmp_path / 'data' / 'val'}" in message and "--allow-split-names" in message
    listing = list_folder(tmp_path / "data", allow_split_names=True)
    assert listing.class_names == ["train", "val"], "insisting makes them two classes"
    image_folder(tmp_path / "mixed", classes=("test", "zebra"))
    assert list_folder(tmp_path / "mixed").class_names == ["test", "zebra"], "one class named like a split is fine"


def test_only_regular_files_are_read_and_the_rest_named_with_its_kind(tmp_path):
    """A named pipe called pipe.png would block a read forever; an empty folder named x.jpg is said."""
    data = image_folder(tmp_path / "data", per_class=3)
    os.mkfifo(data / "ants" / "pipe.png")
    (data / "bees" / "x.jpg").mkdir()
    images, others = walk_images(data / "ants")
    assert str(data / "ants" / "pipe.png") not in images
    assert dict(others)[str(data / "ants" / "pipe.png")].startswith("a named pipe, not a regular file")
    _, others = walk_images(data / "bees")
    assert dict(others)[str(data / "bees" / "x.jpg")] == "an empty folder named like an image"
    listing = list_folder(data)
    assert len(listing.files) == 6 and set(listing.skipped["path"]) == {str(data / "ants" / "pipe.png"), str(data / "bees" / "x.jpg")}
