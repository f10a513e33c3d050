"""A listed dataset made ready to train on: checked, split, deduplicated; and `tf.data` pipelines.

`prepare` decodes every listed image once (`transfer.data.sources` lists them) and moves the files that
fail to `skipped` with the decoder's reason: nothing is dropped silently. It splits, reports
validation images that are byte-for-byte copies of training images, and computes class weights.
The pipelines decode with `transfer.data.preprocessing.decode_image`, as prediction and export do
(through `decode_any`, which first makes HEIC and AVIF photos PNG bytes on the Python side).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from transfer.outputs import layout, publishing
from transfer.core.errors import BadImageError, DataError, op_error_message
from transfer.metrics.multilabel import multi_hot
from transfer.data.preprocessing import content_error, decode_any
from transfer.core.progress import SILENT, Reporter
from transfer.data.sources import SPLITS, Listing

#: Decoded training images are kept in memory when they fit in this many bytes.
IN_MEMORY_CACHE_BYTES = 2 * 1024**3
#: A largest/smallest class ratio from which the imbalance is reported.
IMBALANCE_WARNING = 1.5


@dataclass
class ImageFolder:
    """A dataset, listed, checked and split.

    Attributes:
        class_names: sorted class names; index = model output index.
        examples: one row per usable image: `path`, `label` (class name), `split` (train/val).
        skipped: one row per file that will not be used: `path`, `label`, `reason`.
        duplicates: validation images whose bytes equal a training image's: `val_path`,
            `val_label`, `train_path`, `train_label`, `removed` (by `dedupe`).
        source: the folder(s) or manifest the images came from.
        multi_label: each `label` is a set of labels joined by `;` (`transfer.data.sources.split_labels`).
    """

    class_names: list[str]
    examples: pd.DataFrame
    skipped: pd.DataFrame
    duplicates: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=layout.DUPLICATE_COLUMNS))
    source: str = ""
    multi_label: bool = False

    def paths_and_indices(self, split: str) -> tuple[list[str], np.ndarray]:
        """The paths of a split and their targets: class indices, or for multi-label data a
        `[images, labels]` 0/1 matrix (float32)."""
        rows = self.examples[self.examples["split"] == split]
        if self.multi_label:
            return rows["path"].tolist(), multi_hot(rows["label"], self.class_names)
        index = {name: i for i, name in enumerate(self.class_names)}
        return rows["path"].tolist(), rows["label"].map(index).to_numpy(dtype=np.int32)

    def counts(self) -> pd.DataFrame:
        """Usable images per class (rows, in class order) by split, and skipped files per class; for
        multi-label data, the images carrying each label."""
        table = pd.crosstab(*label_rows(self.examples, self.multi_label))
        table = table.reindex(index=self.class_names, columns=list(SPLITS), fill_value=0)
        skipped = label_rows(self.skipped, self.multi_label)[0].value_counts() if len(self.skipped) else pd.Series(dtype=int)
        table["skipped"] = [int(skipped.get(name, 0)) for name in self.class_names]
        return table

    def imbalance(self) -> float:
        """Largest over smallest number of training images per class."""
        train = self.counts()["train"]
        return float(train.max() / max(train.min(), 1))

    def class_weights(self) -> dict[int, float]:
        """scikit-learn's balanced weights, n_samples / (n_classes * n_class), by class index (single-label data)."""
        _, labels = self.paths_and_indices("train")
        classes = np.arange(len(self.class_names))
        weights = compute_class_weight("balanced", classes=classes, y=labels)
        return {int(c): float(w) for c, w in zip(classes, weights)}


def prepare(
    listing: Listing,
    *,
    image_size: int,
    val_split: float = 0.2,
    seed: int = 0,
    dedupe: bool = False,
    reporter: Reporter = SILENT,
) -> ImageFolder:
    """Checks every image, splits and finds duplicates: a `Listing` becomes an `ImageFolder`.

    Every listed image is decoded once; files that fail are moved to `skipped` with the reason.
    Where the listing fixes no split, a `val_split` share of each class is held out (at least one
    image per class), reproducibly for a given `seed`. Validation images with the same bytes as a training image are
    reported in `duplicates`, and removed from validation with `dedupe`.

    Raises:
        DataError: a class with fewer than 2 usable images (or none in a fixed split).
    """
    files = listing.files.reset_index(drop=True)
    unreadable = find_unreadable(files["path"].tolist(), image_size, reporter)
    broken = files["path"].isin(unreadable)
    skipped = pd.concat(
        [listing.skipped, files[broken].assign(reason=files[broken]["path"].map(unreadable))[["path", "label", "reason"]]],
        ignore_index=True,
    )
    examples = files[~broken].reset_index(drop=True)
    _require_usable(examples, skipped, listing)
    if (examples["split"] == "").any():
        split = _multi_label_split if listing.multi_label else _stratified_split
        examples["split"] = split(examples, val_split, seed)
    duplicates = find_duplicates(examples, reporter)
    if dedupe and len(duplicates):
        duplicates["removed"] = True
        examples = examples[~examples["path"].isin(duplicates["val_path"])].reset_index(drop=True)
        _require_usable(examples, skipped, listing)
    return ImageFolder(listing.class_names, examples, skipped, duplicates, listing.source, listing.multi_label)


def report_data(folder: ImageFolder, reporter: Reporter, *, dedupe: bool, class_weight: str) -> None:
    """Tells the usable images per class, every skipped file, duplicates and imbalance."""
    counts = folder.counts()
    lines = [
        f"  {name}: {row['train']} train, {row['val']} val" + (f", {row['skipped']} skipped" if row["skipped"] else "")
        for name, row in counts.iterrows()
    ]
    reporter.message(f"{len(folder.class_names)} classes, usable images per class:\n" + "\n".join(lines))
    report_skipped(folder.skipped, reporter)
    if len(folder.duplicates):
        action = (
            "removed from validation (--dedupe)" if dedupe
            else "they stay in validation and inflate its accuracy; --dedupe removes them"
        )
        reporter.warning(
            f"{len(folder.duplicates)} validation image(s) are byte-for-byte copies of training images "
            f"(listed in {layout.DUPLICATES}); {action}:"
        )
        for row in folder.duplicates.head(10).itertuples():
            reporter.warning(f"  {row.val_path} = {row.train_path}")
        if len(folder.duplicates) > 10:
            reporter.warning(f"  ... and {len(folder.duplicates) - 10} more")
    ratio = folder.imbalance()
    if ratio >= IMBALANCE_WARNING:
        train = counts["train"]
        advice = "class weights are on (--class-weight auto)" if class_weight == "auto" else (
            "--class-weight auto weights the loss to balance them"
        )
        if folder.multi_label:
            advice = "each label's threshold is chosen on the validation split, which makes up for it in the decisions"
        reporter.warning(
            f"{'Labels' if folder.multi_label else 'Classes'} are imbalanced: {train.idxmax()} has {train.max()} training "
            f"images, {train.idxmin()} {train.min()} ({ratio:.1f}x); {advice}."
        )


def report_skipped(skipped: pd.DataFrame, reporter: Reporter, *, listed_in: str | None = layout.SKIPPED) -> None:
    """Names every file that will not be used, with its reason (and the file of the output that lists them)."""
    if len(skipped):
        reporter.warning(f"Skipped {len(skipped)} file(s)" + (f" (listed in {listed_in}):" if listed_in else ":"))
        for row in skipped.itertuples():
            reporter.warning(f"  {row.path}: {row.reason}")


def find_duplicates(examples: pd.DataFrame, reporter: Reporter = SILENT) -> pd.DataFrame:
    """Validation images whose file content (SHA-256) equals a training image's."""
    digests = []
    with reporter.progress("Hashing images", total=len(examples)) as progress:
        for path in examples["path"]:
            digests.append(publishing.sha256(path))
            progress.advance()
    hashed = examples.assign(digest=digests)
    train = hashed[hashed["split"] == "train"].drop_duplicates("digest")
    val = hashed[hashed["split"] == "val"]
    pairs = val.merge(train, on="digest", suffixes=("_val", "_train"))
    return pd.DataFrame({
        "val_path": pairs["path_val"], "val_label": pairs["label_val"],
        "train_path": pairs["path_train"], "train_label": pairs["label_train"], "removed": False,
    }, columns=layout.DUPLICATE_COLUMNS)


def label_rows(table: pd.DataFrame, multi_label: bool) -> tuple[pd.Series, ...]:
    """`(label, split)` columns of `table` with one row per label an image carries (multi-label data)."""
    if not multi_label:
        return (table["label"],) + ((table["split"],) if "split" in table else ())
    from transfer.metrics.multilabel import split_labels

    exploded = table.assign(label=table["label"].map(split_labels)).explode("label").dropna(subset=["label"])
    return (exploded["label"],) + ((exploded["split"],) if "split" in exploded else ())


def _require_usable(examples: pd.DataFrame, skipped: pd.DataFrame, listing: Listing) -> None:
    """At least 2 usable images per class, and at least 1 per class in each fixed split."""
    usable = label_rows(examples, listing.multi_label)[0].value_counts()
    lacking = [name for name in listing.class_names if usable.get(name, 0) < 2]
    if lacking:
        def detail(name: str) -> str:
            left_out = skipped[label_rows(skipped, listing.multi_label)[0].eq(name).groupby(level=0).any().reindex(skipped.index, fill_value=False)]
            files = "; ".join(f"{row.path}: {row.reason}" for row in left_out.head(5).itertuples())
            more = f"; and {len(left_out) - 5} more" if len(left_out) > 5 else ""
            return f"{name}: {usable.get(name, 0)} usable, {len(left_out)} skipped" + (f" ({files}{more})" if files else "")

        what = "Label(s) on" if listing.multi_label else "Class(es) with"
        raise DataError(
            f"{what} fewer than 2 usable images in {listing.source}: {', '.join(map(detail, lacking))}. "
            f"Every {'label' if listing.multi_label else 'class'} needs at least 2 readable images (one to train on, "
            f"one to validate)."
        )
    for split in sorted(set(examples["split"]) - {""}):
        counts = label_rows(examples[examples["split"] == split], listing.multi_label)[0].value_counts()
        empty = [name for name in listing.class_names if counts.get(name, 0) == 0]
        if empty:
            raise DataError(
                f"Class(es) {', '.join(empty)} have no usable images in the {split} split of "
                f"{listing.source}. Every class needs images in both splits."
            )


def _stratified_split(examples: pd.DataFrame, val_split: float, seed: int) -> list[str]:
    """Holds out `val_split` of each class, rounded, but at least one image, and at least one left
    to train on (every class has 2 or more): every class is validated."""
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=examples.index)
    for _, rows in examples.groupby("label", sort=True):
        held_out = min(len(rows) - 1, max(1, int(np.floor(val_split * len(rows) + 0.5))))
        split[rng.permutation(rows.index.to_numpy())[:held_out]] = "val"
    return split.tolist()


def _multi_label_split(examples: pd.DataFrame, val_split: float, seed: int) -> list[str]:
    """Holds out `val_split` of the images by iterative stratification (Sechidis et al. 2011, the
    `iterative-stratification` package), so each label keeps about its share in validation; then
    every label (each has 2 or more images) is given at least one image in each split, moving the
    image whose other labels can spare it."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    from transfer.metrics.multilabel import split_labels

    names = sorted({label for joined in examples["label"] for label in split_labels(joined)})
    targets = multi_hot(examples["label"], names).astype(int)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val_split, random_state=seed % 2**32)
    _, held_out = next(splitter.split(np.zeros(len(examples)), targets))
    in_val = np.zeros(len(examples), bool)
    in_val[held_out] = True
    for label in np.argsort(targets.sum(axis=0), kind="stable"):  # the rarest first
        for lacking in (True, False):  # validation lacks it, then training
            if (in_val[targets[:, label] == 1] == lacking).any():
                continue
            counts = targets[in_val != lacking].sum(axis=0)  # in the split that gives an image up
            donors = [i for i in np.flatnonzero((targets[:, label] == 1) & (in_val != lacking))
                      if (counts[targets[i] == 1] > 1).all()]
            if donors:
                in_val[min(donors, key=lambda i: targets[i].sum())] = lacking
    return ["val" if held else "train" for held in in_val]


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
    """Why `path` cannot be used as an image: its kind (`content_error`), else the decoder's own
    message, first line (a truncated or damaged file of a known format)."""
    try:
        with open(path, "rb") as file:
            reason = content_error(file.read())
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if reason:
        return reason
    try:
        decode_any(tf.io.read_file(path), 8)
    except tf.errors.OpError as error:
        return op_error_message(error)
    return "unreadable image"


def decode_encoded(contents: Sequence[bytes], image_size: int) -> np.ndarray:
    """Encoded image files (as a server receives them) -> `[N, S, S, 3]` pixels, by `decode_any`.

    Raises:
        BadImageError: the first of them that is not a decodable image, by index.
    """
    decode = _contents_decoder(image_size)
    pixels = []
    for index, content in enumerate(contents):
        reason = content_error(content)
        if reason:
            raise BadImageError(index, reason)
        try:
            pixels.append(decode(tf.constant(content)).numpy())
        except tf.errors.OpError as error:
            raise BadImageError(index, op_error_message(error)) from None
    return np.stack(pixels) if pixels else np.zeros((0, image_size, image_size, 3), np.float32)


@functools.cache
def _contents_decoder(image_size: int):
    return tf.function(lambda contents: decode_any(contents, image_size), input_signature=[tf.TensorSpec([], tf.string)])


def make_dataset(
    paths: Sequence[str],
    labels: np.ndarray,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
) -> tf.data.Dataset:
    """A batched `(pixels, label)` dataset; pixels as from `decode_any`.

    Decoding runs in parallel; decoded images are cached in memory when they fit in
    `IN_MEMORY_CACHE_BYTES`, so later epochs skip decoding. Shuffling happens each epoch.
    """
    dataset = tf.data.Dataset.from_tensor_slices((list(paths), labels))
    dataset = dataset.map(
        lambda path, label: (decode_any(tf.io.read_file(path), image_size), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if len(paths) * image_size * image_size * 3 * 4 <= IN_MEMORY_CACHE_BYTES:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # Under MultiWorkerMirroredStrategy each worker takes every n-th batch. The source is a list
    # of paths in memory, not files, so sharding by FILE cannot apply: DATA is set explicitly.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


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
            lambda path: (path, decode_any(tf.io.read_file(path), image_size)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .ignore_errors()
        .batch(batch_size)
        .prefetch(1)
    )
    for batch_paths, pixels in dataset.as_numpy_iterator():
        yield [p.decode() for p in batch_paths], pixels


