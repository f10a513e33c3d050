"""A .zip or .tar(.gz) of class folders read as the folder (transfer.data.archives), and photos as
people have them (HEIC, AVIF) through train and predict."""

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import write_png
from transfer.cli import app
from transfer.core.errors import DataError
from transfer.data.archives import cache_root, resolve_data
from transfer.data.folders import prepare
from transfer.data.sources import list_folder

runner = CliRunner()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "archives"


def photos(root: Path, per_class: int = 5) -> Path:
    for c, name in enumerate(["bees", "ants", "wasps"]):
        for i in range(per_class):
            write_png(root / name / f"{i}.png", color=(80 * c, 40 * i, 60), size=(16, 16))
    return root


def pack(folder: Path, archive: Path, prefix: str = "", extra: dict[str, bytes] | None = None,
         links: dict[str, str] | None = None) -> Path:
    """`folder`'s files into a zip or tar.gz under `prefix`, plus `extra` members (name -> bytes) and
    symbolic `links` (name -> target)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as bundle:
            for path in files:
                bundle.write(path, prefix + path.relative_to(folder).as_posix())
            for name, data in (extra or {}).items():
                bundle.writestr(name, data)
            for name, target in (links or {}).items():
                info = zipfile.ZipInfo(name)
                info.external_attr = 0o120777 << 16  # a symbolic link, its target as the content
                bundle.writestr(info, target)
    else:
        with tarfile.open(archive, "w:gz") as bundle:
            for path in files:
                bundle.add(path, prefix + path.relative_to(folder).as_posix())
            for name, data in (extra or {}).items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                bundle.addfile(info, io.BytesIO(data))
            for name, target in (links or {}).items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                bundle.addfile(info)
    return archive


@pytest.mark.parametrize("name, prefix", [("photos.zip", "photos/"), ("photos.tar.gz", ""), ("photos.tgz", "data/photos/")])
def test_an_archive_lists_and_splits_as_its_folder_without_writing_beside_it(tmp_path, cache, name, prefix):
    folder = photos(tmp_path / "folder")
    given = tmp_path / "given"
    given.mkdir()
    archive = pack(folder, given / name, prefix, {"__MACOSX/._photos": b"resource fork"} if name.endswith(".zip") else None)
    listing, root = list_folder(archive), resolve_data(archive)

    def relative(frame, root):
        return frame.assign(path=[Path(p).relative_to(root).as_posix() for p in frame["path"]])

    assert listing.class_names == ["ants", "bees", "wasps"] and listing.skipped.empty
    assert relative(listing.files, root).equals(relative(list_folder(folder).files, folder)), "the same files in the same order"
    if name == "photos.zip":  # and so the same split (checked once: each prepare decodes every image)
        split = prepare(listing, image_size=8, seed=4).examples
        assert relative(split, root).equals(relative(prepare(list_folder(folder), image_size=8, seed=4).examples, folder))
    assert root.is_relative_to(cache) and sorted(os.listdir(given)) == [name], "unpacked in the cache only"
    assert str(archive.resolve()) in listing.source and str(root) in listing.source
    assert resolve_data(archive) == root and len(os.listdir(cache)) == 1, "unpacked once, by content"


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("member, data, problem", [
    ("ants/../../evil.png", b"x", "has a '..' in its path"),
    ("/tmp/evil.png", b"x", "has an absolute path"),
])
def test_a_member_leaving_the_archive_is_refused_naming_it(tmp_path, cache, kind, member, data, problem):
    archive = pack(photos(tmp_path / "folder"), tmp_path / f"bad.{kind}", "", {member: data})
    with pytest.raises(DataError, match=problem) as refused:
        list_folder(archive)
    assert repr(member) in str(refused.value) and "\n" not in str(refused.value)
    assert not any(tmp_path.rglob("evil.png")), "nothing written"


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_link_out_of_the_archive_is_refused_and_one_inside_is_read(tmp_path, cache, kind):
    def archive_with_link(name: str, target: str) -> Path:
        return pack(photos(tmp_path / "folder"), tmp_path / f"{name}.{kind}", links={f"ants/{name}.png": target})

    with pytest.raises(DataError, match=r"'ants/out.png' is a link to ../../secret.png, outside the archive"):
        list_folder(archive_with_link("out", "../../secret.png"))
    listing = list_folder(archive_with_link("in", "../bees/0.png"))
    link = resolve_data(tmp_path / f"in.{kind}") / "ants" / "in.png"
    assert link.is_symlink() and link.read_bytes() == (tmp_path / "folder" / "bees" / "0.png").read_bytes()
    skipped = listing.skipped.set_index("path")["reason"]  # as a link to another class in a folder: not followed
    assert "outside this class's folder" in skipped[os.path.abspath(link)]


def test_a_damaged_archive_is_one_line_naming_it(tmp_path):
    broken = tmp_path / "photos.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"Cannot read the archive .*photos.zip"):
        list_folder(broken)


@pytest.mark.slow  # trains LeNet-5 for one epoch through the CLI
def test_train_and_predict_on_a_zip_of_heic_avif_and_png_photos(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    folder = photos(tmp_path / "folder", per_class=4)
    for c, name in enumerate(["bees", "ants", "wasps"]):  # one photo of each kind more per class
        image = Image.fromarray(np.full((24, 24, 3), 80 * c, np.uint8))
        image.save(folder / name / "phone.heic", format="HEIF", quality=90)
        image.save(folder / name / "camera.avif", format="AVIF", quality=90)
    archive = pack(folder, tmp_path / "photos.zip", "photos/")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(archive), "--backbone", "lenet", "--epochs", "1", "--no-augment", "--out", str(run)])
    assert result.exit_code == 0, result.output
    split = pd.read_csv(run / "split.csv")
    assert len(split) == 18 and all(Path(p).is_file() for p in split["path"]), "every photo used, its path readable later"
    assert {Path(p).suffix for p in split["path"]} == {".png", ".heic", ".avif"}
    assert not (run / "skipped.csv").exists() or pd.read_csv(run / "skipped.csv").empty

    predicted = runner.invoke(app, ["predict", str(run), str(archive), "--format", "csv", "--top-k", "1"])
    assert predicted.exit_code == 0, predicted.output
    rows = pd.read_csv(io.StringIO(predicted.stdout))
    assert sorted(rows["path"]) == sorted(split["path"]) and rows["error"].isna().all() and rows["label"].notna().all()
