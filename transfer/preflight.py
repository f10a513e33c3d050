"""What every command that trains checks before the long work, written once.

`train`, `lr-find`, `cross-validate` and `compare` call `preflight` first: the output's place (free,
or an earlier output of the same kind with `force`; not inside the data), the optional parts the
options need, and the images, listed but not decoded. A mistake is answered before any image is
decoded, any model is built or anything is written.
"""

from __future__ import annotations

from pathlib import Path

from transfer import publishing
from transfer.errors import InvalidOptionError
from transfer.options import TrainOptions
from transfer.sources import Listing


def preflight(data_dir: Path | None, out_dir: Path, options: TrainOptions, *, kind: str, force: bool,
              worker: int | None = None) -> Listing:
    """Checks where the `kind` output goes and what `options` need, and lists the images of
    `data_dir` (or `options.manifest`).

    Args:
        worker: the index of a multi-worker training's non-chief worker, which publishes nothing:
            its destination is not checked.

    Raises:
        TransferError: the output is in the way or inside the data, an optional part is missing, or
            the data cannot be listed; nothing is written.
    """
    out_dir = Path(out_dir)
    if worker is None:
        data = (data_dir, options.val_dir) if not options.manifest else ()
        publishing.check_destination(out_dir, kind=kind, force=force, data=data)
    check_installed(options)
    listing = list_data(data_dir, options)
    if worker is None:
        publishing.check_outside(out_dir, tuple(listing.folders))  # a manifest's folders are known now
    return listing


def check_installed(options: TrainOptions) -> None:
    """Refuses, before any image is read, options whose optional parts are not installed: the
    `tensorboard` extra (TensorFlow writes its summaries through it), Keras' MixUp/CutMix layers.

    Raises:
        DependencyMissingError: naming what to install.
    """
    if options.tensorboard:
        from transfer import extras

        extras.require("tensorboard")
    if options.mixing:
        from transfer.mixing import check_mixing_layers

        check_mixing_layers(options)


def list_data(data_dir: Path | None, options: TrainOptions) -> Listing:
    """The images of `data_dir` (and `options.val_dir`), or of `options.manifest`, with what was skipped."""
    from transfer.sources import list_folder, read_manifest

    if options.manifest:
        if data_dir is not None:
            raise InvalidOptionError(
                f"Received both DATA_DIR {data_dir} and --manifest {options.manifest}; give one of them."
            )
        return read_manifest(Path(options.manifest))
    if data_dir is None:
        raise InvalidOptionError("No data given: pass DATA_DIR (one subfolder per class) or --manifest FILE.csv.")
    return list_folder(Path(data_dir), Path(options.val_dir) if options.val_dir else None, options.allow_split_names)
