"""`transfer predict`: top-k labels for image files, from a run directory or an exported SavedModel.

TensorFlow is imported when a model is loaded, after the options and the inputs are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from transfer.errors import DataError, ModelLoadError, op_error_message
from transfer.imagenet import ImageNetClassifier, is_imagenet
from transfer.options import MAX_BATCH_SIZE, require
from transfer.outputs import LABELS, Export, Run, open_model
from transfer.progress import SILENT, Reporter
from transfer.sources import IMAGE_EXTENSIONS, walk_images


@dataclass
class Prediction:
    """The most probable labels for one file, most probable first; or why it has none."""

    path: str
    labels: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        entry = {
            "path": self.path,
            "predictions": [
                {"label": label, "probability": probability}
                for label, probability in zip(self.labels, self.probabilities)
            ],
        }
        return entry if self.error is None else {**entry, "error": self.error}


class KerasScorer:
    """Scores images with a run's `model.keras` (or the ImageNet classifier), fed by
    `transfer.data`'s decoder."""

    def __init__(self, run: Run | ImageNetClassifier):
        self.run = run
        self.model = run.load_model()
        self.labels = run.labels()
        self.config = run.config()
        self.image_size = int(self.model.input_shape[1])
        _check_labels(self.labels, int(self.model.output_shape[-1]), run.path)

    def score_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax for a batch of decoded images (`decode_image` output at `image_size`)."""
        return np.asarray(self.model.predict_on_batch(pixels))

    def score_files(self, paths: Sequence[str], batch_size: int) -> Iterator[tuple[str, np.ndarray | str]]:
        from transfer.data import iter_decoded_batches

        for batch in iter_decoded_batches(paths, self.image_size, batch_size):
            yield from batch.failed
            if batch.paths:
                scores = self.model.predict_on_batch(batch.pixels)
                yield from zip(batch.paths, np.asarray(scores))


class SavedModelScorer:
    """Scores images with an export of `transfer export`, fed with the raw bytes of each file."""

    def __init__(self, export: Export):
        self.serve = export.load_signature()
        self.labels = export.labels()
        self.config = export.config()
        self.image_size = self.config.get("image_size")
        _check_labels(self.labels, int(self.serve.structured_outputs["scores"].shape[-1]), export.path)

    def score_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax for decoded images, sent through the signature as lossless PNGs."""
        if self.image_size is None:
            raise ModelLoadError("This SavedModel has no config.json (exported by an older version); export it again.")
        import tensorflow as tf

        encoded = [tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(p, 0, 255)), tf.uint8)).numpy() for p in pixels]
        return self._scores(encoded)

    def score_files(self, paths: Sequence[str], batch_size: int) -> Iterator[tuple[str, np.ndarray | str]]:
        import tensorflow as tf

        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            try:
                yield from zip(batch, self._scores([_read(p) for p in batch]))
            except (tf.errors.OpError, OSError):
                for path in batch:  # isolate the file(s) that failed
                    try:
                        yield path, self._scores([_read(path)])[0]
                    except (tf.errors.OpError, OSError) as error:
                        yield path, _reason(path, error)

    def _scores(self, contents: list[bytes]) -> np.ndarray:
        import tensorflow as tf

        return self.serve(images=tf.constant(contents, dtype=tf.string))["scores"].numpy()


Scorer = KerasScorer | SavedModelScorer


def model_labels(path: Path | str) -> list[str]:
    """The class names of a run, an export or `imagenet:NAME`, without loading the model."""
    from transfer.imagenet import class_names

    return class_names() if is_imagenet(path) else open_model(path).labels()


def load_scorer(path: Path | str, weights: str | None = None) -> Scorer:
    """Scores with a run directory, an exported SavedModel (`transfer.outputs.open_model`), or the
    ImageNet classifier as it comes (`imagenet:NAME`, `weights` its `include_top` file or `None`).

    Raises:
        InvalidOptionError: `weights` given for anything but `imagenet:NAME`.
    """
    if is_imagenet(path):
        return KerasScorer(ImageNetClassifier.open(path, weights))
    require(weights is None, "--weights", weights, "given only with imagenet:NAME (a run or an export has its own)")
    model = open_model(path)
    return KerasScorer(model) if isinstance(model, Run) else SavedModelScorer(model)


def collect_images(inputs: Sequence[Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files named directly, and those found recursively in named folders, in sorted order;
    and the files of those folders that are not read, with the reason (`transfer.sources`)."""
    paths, skipped = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            images, others = walk_images(item)  # as training lists a class folder
            paths += images
            skipped += others
        elif item.is_file():
            paths.append(str(item))  # named by the user: read whatever its extension says
        else:
            raise DataError(f"{item} does not exist; pass image files or folders of images.")
    return paths, skipped


def resolve_top_k(top_k: int | None, classes: int) -> int:
    """Labels per image: `top_k`, or min(3, classes) when `None`.

    Raises:
        InvalidOptionError: `top_k` is not between 1 and the number of classes.
    """
    k = min(3, classes) if top_k is None else top_k
    require(1 <= k <= classes, "--top-k", top_k, f"between 1 and {classes} (the classes of this model)")
    return k


def predict(
    model_path: Path,
    inputs: Sequence[Path],
    *,
    top_k: int | None = None,
    batch_size: int = 32,
    weights: str | None = None,
    reporter: Reporter = SILENT,
) -> Iterator[Prediction]:
    """Yields a `Prediction` per file, as soon as its batch is scored, in sorted order within each folder.

    Folders are streamed in batches, so memory is bounded by `batch_size`. Files that cannot be
    decoded, and files of the folders that are not images, yield a `Prediction` with `error` set.

    Raises:
        InvalidOptionError: `top_k` or `batch_size` out of range.
        DataError: an input that does not exist, or no image file at all.
    """
    require(top_k is None or top_k >= 1, "--top-k", top_k, "an integer >= 1")
    require(1 <= batch_size <= MAX_BATCH_SIZE, "--batch-size", batch_size, f"an integer between 1 and {MAX_BATCH_SIZE}")
    paths, skipped = collect_images(inputs)
    if not paths:
        raise DataError(
            f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, inputs))}"
            + (f"; {len(skipped)} other file(s) left out, e.g. {skipped[0][0]}: {skipped[0][1]}." if skipped else ".")
        )
    require(weights is None or is_imagenet(model_path), "--weights", weights,
            "given only with imagenet:NAME (a run or an export has its own)")
    k = resolve_top_k(top_k, len(model_labels(model_path)))  # before the model is loaded: labels.txt says
    model = load_scorer(model_path, weights)
    for path, reason in skipped:
        yield Prediction(path, error=reason)
    with reporter.progress("Predicting", total=len(paths)) as progress:
        for path, scores in model.score_files(paths, batch_size):
            progress.advance()
            if isinstance(scores, str):
                yield Prediction(path, error=scores)
                continue
            order = np.argsort(-scores, kind="stable")[:k]
            yield Prediction(path, [model.labels[i] for i in order], [float(scores[i]) for i in order])


def _check_labels(labels: list[str], outputs: int, path: Path) -> None:
    if len(labels) != outputs:
        raise ModelLoadError(
            f"{path}: {LABELS} lists {len(labels)} labels but the model has {outputs} outputs. "
            f"The folder mixes files of different runs; train or export it again."
        )


def _reason(path: str, error: Exception) -> str:
    """Why the signature refused a file: the shared decoder's own words (the SavedModel decodes with
    it), or the signature's message when the decoder reads the file."""
    from transfer.data import image_error

    reason = image_error(path)
    return reason if reason != "unreadable image" else op_error_message(error)


def _read(path: str) -> bytes:
    return Path(path).read_bytes()
