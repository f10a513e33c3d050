"""Messy image folders, manifests, bad options and damaged models: clear answers, nothing lost."""

import io
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image, ImageOps
from typer.testing import CliRunner

from cli import app
from transfer.data import prepare
from transfer.errors import DataError
from transfer.preprocessing import decode_image
from transfer.sources import list_folder, read_manifest

from .cli_cases import CASES, Workspace, answer, image_folder, write_png

runner = CliRunner()


def blocks(width=48, height=32) -> Image.Image:
    """An image whose four quadrants differ, so any flip or rotation shows."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (250, 20, 20)
    pixels[: height // 2, width // 2 :] = (20, 250, 20)
    pixels[height // 2 :, : width // 2] = (20, 20, 250)
    pixels[height // 2 :, width // 2 :] = (240, 240, 30)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def resized(image: Image.Image, size: int) -> np.ndarray:
    pixels = tf.constant(np.asarray(image.convert("RGB"), np.float32))
    return tf.image.resize(pixels, (size, size), antialias=True).numpy()


# --- Decoding: every kind of file a camera or an export tool writes ---------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(blocks(), "JPEG", quality=95, exif=exif.tobytes())
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    got = decode_image(data, 16).numpy()
    assert np.abs(got - resized(upright, 16)).mean() < 4


def test_little_endian_exif_is_read_too():
    # TIFF header "II" (Intel byte order), one IFD entry: orientation (0x0112) = 6.
    tiff = b"II*\x00\x08\x00\x00\x00" + b"\x01\x00" + b"\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00" + b"\x00" * 4
    app1 = b"\xff\xe1" + (len(tiff) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + tiff
    plain = encoded(blocks(), "JPEG", quality=95)
    rotated = plain[:2] + app1 + plain[2:]
    expected = resized(blocks().transpose(Image.Transpose.ROTATE_270), 16)
    assert np.abs(decode_image(rotated, 16).numpy() - expected).mean() < 4


def test_cmyk_jpeg_decodes_to_the_same_colours():
    rgb = Image.new("RGB", (32, 24), (200, 30, 60))
    pixels = decode_image(encoded(rgb.convert("CMYK"), "JPEG", quality=95), 8).numpy()
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (200, 30, 60), atol=4)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_to_8_bits(channels):
    values = np.array([60000, 1000, 30000][:channels], np.uint16)
    png = tf.io.encode_png(tf.constant(np.broadcast_to(values, (12, 10, channels)).copy())).numpy()
    pixels = decode_image(png, 4).numpy()
    expected = np.broadcast_to(values / 257.0, (3,)) if channels == 1 else values / 257.0
    np.testing.assert_allclose(pixels[0, 0], expected, atol=1.5)


@pytest.mark.parametrize("actual, named", [("PNG", "jpg"), ("BMP", "png"), ("JPEG", "png"), ("GIF", "jpeg")])
def test_wrong_extension_is_decoded_by_content(tmp_path, actual, named):
    image = Image.new("RGB", (20, 20), (10, 200, 90))
    path = tmp_path / f"photo.{named}"
    path.write_bytes(encoded(image, actual))
    pixels = decode_image(path.read_bytes(), 6).numpy()
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (10, 200, 90), atol=6)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_very_large_image_decodes(fmt):
    big = Image.new("RGB", (6000, 4000), (30, 60, 90))
    pixels = decode_image(encoded(big, fmt), 32).numpy()
    assert pixels.shape == (32, 32, 3)
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), (30, 60, 90), atol=3)


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (7, 30)])
def test_tiny_images_are_upsampled(size):
    pixels = decode_image(encoded(Image.new("RGB", size, (1, 2, 250)), "PNG"), 32).numpy()
    assert pixels.shape == (32, 32, 3)
    np.testing.assert_allclose(pixels, np.broadcast_to((1, 2, 250), (32, 32, 3)), atol=1)


# --- Folders: names, links, nesting, unreadable files ----------------------------------------


def test_names_with_spaces_and_non_ascii_train_and_predict(tmp_path):
    root = tmp_path / "données photo"
    for i, name in enumerate(["abeille été", "fourmi 蟻"]):
        for j in range(4):
            write_png(root / name / f"image n°{j} ü.png", color=(200 * i, 40 * j, 50))
    run = tmp_path / "run é"
    result = runner.invoke(app, ["train", str(root), "--backbone", "lenet", "--epochs", "1", "--val-split", "0.5", "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "labels.txt").read_text().splitlines() == ["abeille été", "fourmi 蟻"]
    predicted = runner.invoke(app, ["predict", str(run), str(root / "fourmi 蟻"), "--format", "csv"])
    assert predicted.exit_code == 0 and predicted.stdout.count("image n°") == 8  # 4 images x top 2


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
    assert len(ants) == 2 + 1 + 3  # own, a linked file, a linked folder listed once (not via the loop)
    from transfer.prediction import collect_images

    assert sorted(map(os.path.abspath, collect_images([root / "ants"]))) == sorted(ants)  # predict lists alike
    assert [r for r in listing.skipped["reason"]] == [f"broken symbolic link (target {tmp_path / 'deleted.png'} does not exist)"]


def test_nested_folders_belong_to_their_class(tmp_path):
    root = image_folder(tmp_path / "data", per_class=2)
    write_png(root / "ants" / "2024" / "june" / "deep.png")
    listing = list_folder(root)
    assert listing.files.groupby("label").size().to_dict() == {"ants": 3, "bees": 2}


def test_unreadable_files_are_listed_by_path_with_reason_per_class(tmp_path):
    root = image_folder(tmp_path / "data", per_class=4)
    (root / "ants" / "empty.jpg").write_bytes(b"")
    photo = encoded(blocks(200, 200), "JPEG", quality=90)
    (root / "ants" / "truncated.jpg").write_bytes(photo[: len(photo) // 2])
    (root / "bees" / "text.png").write_text("hello")
    (root / "bees" / ".DS_Store").write_bytes(b"\0")
    folder = prepare(list_folder(root), image_size=8, val_split=0.5)
    reasons = {os.path.basename(p): r for p, r in zip(folder.skipped["path"], folder.skipped["reason"])}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["truncated.jpg"] and reasons["text.png"].startswith("Unknown image file format")
    assert reasons[".DS_Store"] == "hidden file"
    assert folder.counts()["skipped"].to_dict() == {"ants": 2, "bees": 2}
    assert len(folder.examples) == 8


def test_a_class_left_with_one_usable_image_is_an_error_naming_it(tmp_path):
    root = image_folder(tmp_path / "data", per_class=3)
    for name in ("1.png", "2.png"):
        (root / "bees" / name).write_bytes(b"junk")
    with pytest.raises(DataError, match=r"bees: 1 usable, 2 skipped"):
        prepare(list_folder(root), image_size=8)


# --- Duplicates and imbalance -----------------------------------------------------------------


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


def test_balanced_class_weights_match_scikit_learn(tmp_path):
    from sklearn.utils.class_weight import compute_class_weight

    root = image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=2)
    image_folder(root, classes=("b",), per_class=10)
    folder = prepare(list_folder(root), image_size=8, val_split=0.25)
    _, labels = folder.paths_and_indices("train")
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert folder.class_weights() == pytest.approx(dict(enumerate(expected)))
    assert folder.class_weights()[1] < 1 < folder.class_weights()[0]
    assert folder.imbalance() > 3


def test_class_weight_auto_is_used_and_recorded(tmp_path):
    root = image_folder(tmp_path / "data", per_class=4)
    image_folder(root, classes=("bees",), per_class=12)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(root), "--backbone", "lenet", "--epochs", "1", "--class-weight", "auto", "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "Class weights (balanced): ants 2.000, bees 0.667" in result.output
    import json

    assert json.loads((run / "config.json").read_text())["class_weights"] == {"0": 2.0, "1": pytest.approx(0.6667, abs=1e-3)}


# --- Manifests --------------------------------------------------------------------------------


def test_manifest_with_relative_paths_and_split(tmp_path):
    image_folder(tmp_path / "images", per_class=3)
    rows = [f"images/{c}/{j}.png,{c},{'val' if j == 0 else 'train'}" for c in ("bees", "ants") for j in range(3)]
    (tmp_path / "list.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    listing = read_manifest(tmp_path / "list.csv")
    assert listing.class_names == ["ants", "bees"]
    assert listing.files["path"].map(os.path.isabs).all()
    folder = prepare(listing, image_size=8)
    assert folder.counts()[["train", "val"]].to_dict() == {"train": {"ants": 2, "bees": 2}, "val": {"ants": 1, "bees": 1}}


def test_manifest_trains_through_the_cli_with_a_stratified_split(tmp_path):
    image_folder(tmp_path / "images", per_class=4)
    rows = [f"{tmp_path}/images/{c}/{j}.png,{c}" for c in ("ants", "bees") for j in range(4)]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--manifest", str(tmp_path / "list.csv"), "--backbone", "lenet", "--epochs", "1", "--val-split", "0.5", "--out", str(run)])
    assert result.exit_code == 0, result.output
    split = pd.read_csv(run / "split.csv")
    assert split.groupby(["label", "split"]).size().to_dict() == {("ants", "train"): 2, ("ants", "val"): 2, ("bees", "train"): 2, ("bees", "val"): 2}


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


# --- The command line, case by case (the table in tests/cli_cases.py) -------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("cases"))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_cli_case(case, workspace):
    before = sorted(p.name for p in workspace.root.iterdir())
    result = runner.invoke(app, case.argv(workspace))
    assert result.exit_code == case.exit_code, result.output
    assert case.fragment in answer(result.output, case.fragment), result.output
    assert "Traceback" not in result.output
    if case.exit_code:
        created = set(p.name for p in workspace.root.iterdir()) - set(before)
        assert not {n for n in created if n.startswith(("out-", ".out-"))}, "a failed command wrote an output"
