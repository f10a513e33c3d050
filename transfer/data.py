"""Image folders in: class discovery, the train/validation split, and `tf.data` pipelines.

A dataset folder has one subfolder per class (the `keras.utils.image_dataset_from_directory`
layout). Class names are the subfolder names in sorted order; a class's index in that order is its
output index in every model, and `labels.txt` lists them in that order. Images in nested folders
below a class folder belong to that class. Hidden files and files without an image extension are
skipped and reported, as are files that cannot be decoded: nothing is dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import train_test_split

from transfer.errors import DataError
from transfer.events import SILENT, Reporter
from transfer.preprocessing import IMAGE_EXTENSIONS, decode_image

#: Decoded training images are kept in memory when they fit in this many bytes.
IN_MEMORY_CACHE_BYTES = 2 * 1024**3


@dataclass
class ImageFolder:
    """A dataset, listed and checked.

    Attributes:
        class_names: sorted class names; index = model output index.
        examples: one row per usable image: `path`, `label` (class name), `split` (train/val).
        skipped: one row per file that will not be used: `path`, `reason`.
    """

    class_names: list[str]
    examples: pd.DataFrame
    skipped: pd.DataFrame

    def paths_and_indices(self, split: str) -> tuple[list[str], np.ndarray]:
        rows = self.examples[self.examples["split"] == split]
        index = {name: i for i, name in enumerate(self.class_names)}
        return rows["path"].tolist(), rows["label"].map(index).to_numpy(dtype=np.int32)

    def counts(self) -> pd.DataFrame:
        """Images per class (rows, in class order) and split (columns)."""
        table = pd.crosstab(self.examples["label"], self.examples["split"])
        return table.reindex(index=self.class_names, columns=["train", "val"], fill_value=0)


def list_classes(data_dir: Path) -> list[str]:
    """Sorted names of the class subfolders of `data_dir`.

    Raises:
        DataError: the folder is missing, has fewer than two class subfolders, or holds images
            directly instead of in class subfolders.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"Data folder {data_dir} does not exist or is not a folder. Expected a folder with one "
            f"subfolder of images per class, e.g. {data_dir}/cats/*.jpg and {data_dir}/dogs/*.jpg."
        )
    loose = sorted(p.name for p in data_dir.iterdir() if p.is_file() and _has_image_suffix(p))
    if loose:
        raise DataError(
            f"{data_dir} holds images directly ({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}); "
            f"expected one subfolder per class. Move each image into a folder named after its class."
        )
    names = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise DataError(
            f"{data_dir} has {len(names)} class subfolder(s) ({', '.join(names) or 'none'}); a "
            f"classifier needs at least 2, one subfolder of images per class."
        )
    return names


def list_images(data_dir: Path, class_names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Lists image files per class, recursing into nested folders.

    Returns:
        `(images, skipped)`: images with columns `path, label`; skipped files (hidden, or not an
        image extension) with columns `path, reason`.
    """
    images, skipped = [], []
    for name in class_names:
        for path in sorted((Path(data_dir) / name).rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(data_dir)
            if any(part.startswith(".") for part in relative.parts):
                skipped.append((os.path.abspath(path), "hidden file"))
            elif not _has_image_suffix(path):
                skipped.append((os.path.abspath(path), f"not an image file (extension {path.suffix or 'none'!r})"))
            else:
                images.append((os.path.abspath(path), name))
    return (
        pd.DataFrame(images, columns=["path", "label"]),
        pd.DataFrame(skipped, columns=["path", "reason"]),
    )


def load_image_folder(
    data_dir: Path,
    class_names: Sequence[str],
    *,
    image_size: int,
    val_dir: Path | None = None,
    val_split: float = 0.2,
    seed: int = 0,
    reporter: Reporter = SILENT,
) -> ImageFolder:
    """Lists, checks and splits a dataset.

    Every listed image is decoded once to find unreadable files. With `val_dir`, that folder is
    the validation split and must have the same classes; otherwise a stratified `val_split` share
    of each class is held out, reproducibly for a given `seed`.

    Raises:
        DataError: a class without usable images, or classes that differ between the folders.
    """
    frames, skipped = [], []
    for folder, split in ((data_dir, "train"), (val_dir, "val")):
        if folder is None:
            continue
        if split == "val":
            val_classes = list_classes(folder)
            if val_classes != list(class_names):
                raise DataError(
                    f"The validation folder {folder} has classes {val_classes}, but the training "
                    f"folder {data_dir} has {list(class_names)}. Both need the same class subfolders."
                )
        images, skipped_here = list_images(folder, class_names)
        frames.append(images.assign(split=split))
        skipped.append(skipped_here)
    examples = pd.concat(frames, ignore_index=True)

    unreadable = find_unreadable(examples["path"].tolist(), image_size, reporter)
    skipped.append(pd.DataFrame(sorted(unreadable.items()), columns=["path", "reason"]))
    examples = examples[~examples["path"].isin(unreadable)].reset_index(drop=True)
    skipped = pd.concat(skipped, ignore_index=True)

    for split in examples["split"].unique():
        counts = examples[examples["split"] == split]["label"].value_counts()
        empty = [name for name in class_names if counts.get(name, 0) == 0]
        if empty:
            raise DataError(
                f"Class(es) {', '.join(empty)} have no usable images in the {split} folder "
                f"(see the skipped files). Every class needs images."
            )
    if val_dir is None:
        examples["split"] = _stratified_split(examples, val_split, seed)
    return ImageFolder(list(class_names), examples, skipped)


def _stratified_split(examples: pd.DataFrame, val_split: float, seed: int) -> list[str]:
    try:
        _, val_index = train_test_split(
            examples.index, test_size=val_split, random_state=seed, stratify=examples["label"]
        )
    except ValueError as error:
        raise DataError(
            f"Cannot hold out a stratified {val_split:.0%} of {len(examples)} images for validation: "
            f"{error} Add images, change --val-split, or pass a --val-dir."
        ) from None
    return np.where(examples.index.isin(val_index), "val", "train").tolist()


def find_unreadable(paths: Sequence[str], image_size: int, reporter: Reporter = SILENT) -> dict[str, str]:
    """Decodes every image (in parallel, as training will) and returns `{path: reason}` of failures."""
    readable = set()
    with reporter.progress("Checking images", total=len(paths)) as progress:
        for batch in _decoded(paths, image_size, batch_size=32):
            readable.update(batch[0])
            progress.advance(len(batch[0]))
        failed = [path for path in paths if path not in readable]
        progress.advance(len(failed))
    return {path: image_error(path) for path in failed}


def image_error(path: str) -> str:
    """Why `path` cannot be used as an image: the decoder's own message, first line."""
    try:
        decode_image(tf.io.read_file(path), 8)
    except tf.errors.OpError as error:
        return error.message.splitlines()[0] if error.message else type(error).__name__
    return "unreadable image"


def make_dataset(
    paths: Sequence[str],
    labels: np.ndarray,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
) -> tf.data.Dataset:
    """A batched `(pixels, label)` dataset; pixels as from `decode_image`.

    Decoding runs in parallel; decoded images are cached in memory when they fit in
    `IN_MEMORY_CACHE_BYTES`, so later epochs skip decoding. Shuffling happens each epoch.
    """
    dataset = tf.data.Dataset.from_tensor_slices((list(paths), labels))
    dataset = dataset.map(
        lambda path, label: (decode_image(tf.io.read_file(path), image_size), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if len(paths) * image_size * image_size * 3 * 4 <= IN_MEMORY_CACHE_BYTES:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclass
class DecodedBatch:
    """Images that decoded, in input order, and the files in between that did not."""

    paths: list[str]
    pixels: np.ndarray
    failed: list[tuple[str, str]]


def iter_decoded_batches(paths: Sequence[str], image_size: int, batch_size: int) -> Iterator[DecodedBatch]:
    """Streams images in batches with memory bounded by the batch; reports undecodable files.

    Every path appears exactly once, either in a batch's `paths` or in a batch's `failed`
    (with the reason), in input order.
    """
    pending = iter(paths)
    for batch_paths, pixels in _decoded(paths, image_size, batch_size):
        failed = []
        for path in batch_paths:
            for expected in pending:
                if expected == path:
                    break
                failed.append((expected, image_error(expected)))
        yield DecodedBatch(list(batch_paths), pixels, failed)
    rest = [(path, image_error(path)) for path in pending]
    if rest:
        yield DecodedBatch([], np.zeros((0, image_size, image_size, 3), np.float32), rest)


def _decoded(paths: Sequence[str], image_size: int, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """`(paths, pixels)` batches of the images that decode, in input order; others left out."""
    if not paths:
        return
    dataset = (
        tf.data.Dataset.from_tensor_slices(list(paths))
        .map(
            lambda path: (path, decode_image(tf.io.read_file(path), image_size)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .ignore_errors()
        .batch(batch_size)
        .prefetch(1)
    )
    for batch_paths, pixels in dataset.as_numpy_iterator():
        yield [p.decode() for p in batch_paths], pixels


def _has_image_suffix(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS
