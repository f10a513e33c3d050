"""What every command that trains checks before the long work, written once.

`train`, `lr-find`, `cross-validate` and `compare` call `preflight` first: the output's place (free,
or an earlier output of the same kind with `force`; not inside the data), the optional parts the
options need, and the images, listed but not decoded. A mistake is answered before any image is
decoded, any model is built or anything is written.
"""

from __future__ import annotations

from pathlib import Path

from transfer.outputs import publishing
from transfer.core.errors import InvalidOptionError
from transfer.training.options import TrainOptions
from transfer.data.sources import Listing
from transfer.training.option_fields import flag


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
    check_labels_kind(listing, options)
    if worker is None:
        publishing.check_outside(out_dir, tuple(listing.folders))  # a manifest's folders are known now
    return listing


def check_labels_kind(listing: Listing, options: TrainOptions) -> None:
    """Refuses `--multi-label` on single-label data, and options that single-label data alone can use
    on a multi-label manifest (whose `labels` column switches multi-label on by itself).

    Raises:
        DataError, InvalidOptionError: naming the column or the option.
    """
    from transfer.core.errors import DataError

    if options.multi_label and not listing.multi_label:
        raise DataError(
            f"{flag.multi_label}: {listing.source} has one label per image (a label column, or class folders); a multi-label "
            f"manifest has a labels column: path,labels with the labels of each image separated by ;."
        )
    if listing.multi_label and options.class_weight == "auto":
        raise InvalidOptionError(
            f"{flag.class_weight} auto balances the classes of single-label data; {listing.source} is multi-label (a labels "
            f"column), where each label is its own yes/no. Drop {flag.class_weight} auto."
        )


def with_labels_kind(options: TrainOptions, listing: Listing, reporter) -> TrainOptions:
    """`options` with `multi_label` on where the manifest has a `labels` column, said once."""
    import dataclasses

    if listing.multi_label and not options.multi_label:
        reporter.message("The manifest has a labels column: multi-label training, one sigmoid per label (as --multi-label).")
        return dataclasses.replace(options, multi_label=True)
    return options


def check_installed(options: TrainOptions) -> None:
    """Refuses, before any image is read, options whose optional parts are not installed: the
    `tensorboard` extra (TensorFlow writes its summaries through it), and the extra whose package
    ships a backbone's ImageNet weights (`efficientnet_lite0`) until they are in Keras' cache.

    Raises:
        DependencyMissingError: naming what to install.
    """
    from transfer.core import extras
    from transfer.models.registry import BACKBONES, keras_cache_dir

    if options.tensorboard:
        extras.require("tensorboard")
    spec = BACKBONES.get(options.backbone or "")
    if spec is not None and spec.weights_extra and options.weights == "imagenet" and not (keras_cache_dir() / spec.weights_file).is_file():
        extras.require(spec.weights_extra)


def list_data(data_dir: Path | None, options: TrainOptions) -> Listing:
    """The images of `data_dir` (and `options.val_dir`), or of `options.manifest`, with what was skipped."""
    from transfer.data.sources import list_folder, read_manifest

    if options.manifest:
        if data_dir is not None:
            raise InvalidOptionError(
                f"Received both DATA_DIR {data_dir} and --manifest {options.manifest}; give one of them."
            )
        return read_manifest(Path(options.manifest))
    if data_dir is None:
        raise InvalidOptionError("No data given: pass DATA_DIR (one subfolder per class) or --manifest FILE.csv.")
    return list_folder(Path(data_dir), Path(options.val_dir) if options.val_dir else None, options.allow_split_names)
