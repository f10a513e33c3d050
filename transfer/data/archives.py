"""A `.zip`, `.tar`, `.tar.gz` or `.tgz` of class folders, read wherever a data folder is.

`resolve_data` is the one place a data path is resolved: an archive is unpacked once into the cache
(never beside it, nor into the user's folder), in a folder named after the archive and the SHA-256 of
its content (`ARCHIVE_CACHE`/`photos-<16 hex digits>`), and the folder holding its class folders is
returned: an archive whose top level is one folder (`photos.zip` holding `photos/ants/...`) is read
from inside that folder. The recorded paths (split.csv, skipped files, predictions) are the cached
files', which every later command finds: the same archive unpacks to the same folder again.

Every member's name is checked first: no absolute path, no `..`, no link leading out of the archive,
no device file. One bad member refuses the archive with one line naming it; nothing is written.
macOS's `__MACOSX/` resource-fork folder is left out.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from transfer.core.errors import DataError
from transfer.outputs import publishing

#: The archive kinds read as data folders, by the end of their names (compared case-insensitively).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
#: Members left out of every archive: what macOS adds to the zips it makes.
LEFT_OUT = "__MACOSX"


def is_archive(path: Path | str) -> bool:
    return Path(path).name.lower().endswith(ARCHIVE_SUFFIXES) and Path(path).is_file()


def cache_root() -> Path:
    """Where archives are unpacked: `$TRANSFER_CACHE_DIR`, else `$XDG_CACHE_HOME/keras-transfer`, else
    `~/.cache/keras-transfer`; then `archives/`."""
    root = os.environ.get("TRANSFER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "keras-transfer")
    return Path(root) / "archives"


def resolve_data(path: Path | str | None) -> Path | None:
    """`path` itself, or for an archive the folder of its unpacked copy that holds the class folders.

    Raises:
        DataError: the archive is damaged, or one of its members is unsafe (named in the message).
    """
    if path is None or not is_archive(path):
        return None if path is None else Path(path)
    archive = Path(path)
    stem = archive.name[: -len(next(s for s in ARCHIVE_SUFFIXES if archive.name.lower().endswith(s)))]
    target = cache_root() / f"{stem}-{publishing.sha256(archive)[:16]}"
    if not target.is_dir():
        _unpack(archive, target)
    return _inner_root(target)


def _unpack(archive: Path, target: Path) -> None:
    """Checks every member, then unpacks into a temporary folder renamed to `target` when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, temporary)
        else:
            _unpack_tar(archive, temporary)
        try:
            os.rename(temporary, target)
        except OSError:  # another process unpacked it first
            if not target.is_dir():
                raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"Cannot read the archive {archive} ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
                        f"expected a .zip, .tar, .tar.gz or .tgz of class folders. Check the file, or unpack it yourself and "
                        f"pass the folder.") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _unpack_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members, links = [], []
        for info in bundle.infolist():
            if not _keep(_checked_name(archive, info.filename)):
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                links.append((info.filename, _checked_link(archive, info.filename, bundle.read(info).decode("utf-8", "replace"))))
            else:
                members.append(info)
        bundle.extractall(into, members)
        for name, target in links:  # zipfile writes a link as a file holding its target: made a link
            os.makedirs(os.path.dirname(into / name.rstrip("/")), exist_ok=True)
            os.symlink(target, into / name.rstrip("/"))


def _unpack_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as bundle:
        members = []
        for member in bundle.getmembers():
            if not _keep(_checked_name(archive, member.name)):
                continue
            if member.issym():
                _checked_link(archive, member.name, member.linkname)
            elif member.islnk():
                _checked_link(archive, member.name, "/".join([".."] * member.name.count("/") + [member.linkname]))
            elif not (member.isfile() or member.isdir()):
                _refuse(archive, member.name, "is a device file or a pipe, not a file or folder")
            members.append(member)
        bundle.extractall(into, members, filter="data")  # the standard library's own checks, as a second guard


def _checked_name(archive: Path, name: str) -> str:
    """`name` with `/` separators, refused when absolute or with a `..` part."""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        _refuse(archive, name, "has an absolute path")
    if ".." in normal.split("/"):
        _refuse(archive, name, "has a '..' in its path (it would be written outside the archive's folder)")
    return normal


def _checked_link(archive: Path, name: str, target: str) -> str:
    """A link's `target`, refused where it leads out of the archive."""
    where = posixpath.normpath(posixpath.join(posixpath.dirname(name.rstrip("/")), target))
    if target.startswith("/") or where == ".." or where.startswith("../"):
        _refuse(archive, name, f"is a link to {target}, outside the archive")
    return target


def _keep(name: str) -> bool:
    return name.split("/")[0] != LEFT_OUT


def _refuse(archive: Path, name: str, problem: str) -> None:
    raise DataError(f"The archive {archive} is not read: its member {name!r} {problem}. An archive of class folders holds "
                    f"only relative paths inside it (ants/1.jpg); pack the folder again without that member.")


def _inner_root(folder: Path) -> Path:
    """The folder an unpacked archive's class folders are in: down through a top level of one folder."""
    while True:
        entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]
