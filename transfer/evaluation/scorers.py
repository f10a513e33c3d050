"""Scoring images with every kind of model `transfer` reads, each with its own runtime.

| model | scorer | runtime | what it is fed |
|---|---|---|---|
| run directory, `imagenet:NAME` | `KerasScorer` | Keras | pixels from `transfer.data.preprocessing.decode_image` |
| SavedModel export | `SavedModelScorer` | TensorFlow | the raw bytes of each file (it decodes them itself; HEIC and AVIF made PNG first) |
| LiteRT export (`.tflite`) | `LiteRTScorer` | LiteRT (`ai-edge-litert`) | pixels from `decode_image` (uint8 for int8 models) |
| ONNX export (`.onnx`) | `OnnxScorer` | ONNX Runtime | pixels from `decode_image` |

Every scorer has `labels`, `config`, `image_size` and three ways in: `score_pixels` (decoded
images), `score_files` (paths, streamed in batches, undecodable files reported with the reason) and
`score_encoded` (file contents, as a server receives them). All return `Scored`: the softmax in
`labels.txt` order and, where the run recorded an open-set detector (`transfer.models.detector`), each
image's novelty score, computed by the model itself in every format; `unknown_threshold` is the
score beyond which an image is answered `unknown`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from transfer.core import extras
from transfer.core.errors import BadImageError, ModelLoadError, op_error_message, require, sigint_deferred
from transfer.models.imagenet import ImageNetClassifier, is_imagenet
from transfer.outputs.artifacts import Export, Run, open_model
from transfer.outputs.layout import LABELS
from transfer.models.saving import load_run_model


@dataclass(frozen=True)
class Scored:
    """What a model says of a batch of images (or, from `score_files`, of one: a row and a float).

    Attributes:
        probabilities: `[N, classes]`, in `labels.txt` order.
        novelty: `[N]` novelty scores of the model's open-set detector; `None` where it has none.
    """

    probabilities: np.ndarray
    novelty: np.ndarray | float | None = None

    def rows(self) -> Iterator[Scored]:
        for index, row in enumerate(self.probabilities):
            yield Scored(row, None if self.novelty is None else float(self.novelty[index]))


def _scored(probabilities, novelty=None) -> Scored:
    return Scored(np.asarray(probabilities, np.float32), None if novelty is None else np.asarray(novelty, np.float32).reshape(-1))


class PixelScorer:
    """A model fed decoded pixels: the shared decoder runs in front of it."""

    labels: list[str]
    config: dict
    image_size: int

    @property
    def unknown_threshold(self) -> float | None:
        """The novelty score beyond which an image is `unknown` (`config.json`'s `unknown_detector`)."""
        return unknown_threshold(self.config)

    def score_pixels(self, pixels: np.ndarray) -> Scored:
        raise NotImplementedError

    def score_files(self, paths: Sequence[str], batch_size: int) -> Iterator[tuple[str, Scored | str]]:
        from transfer.data.folders import iter_decoded_batches

        batches, score = iter_decoded_batches(paths, self.image_size, batch_size), self.scorer_for(len(paths))
        while True:
            with sigint_deferred():  # Ctrl-C inside TensorFlow's decoding or scoring is raised once it returns
                batch = next(batches, None)
                scores = score(batch.pixels) if batch is not None and batch.paths else None
            if batch is None:
                return
            yield from batch.failed
            if batch.paths:
                yield from zip(batch.paths, scores.rows())

    def scorer_for(self, count: int):
        """The function that scores the pixels of a call with `count` images: `score_pixels`."""
        return self.score_pixels

    def score_encoded(self, contents: Sequence[bytes]) -> Scored:
        """Softmax (and novelty) for encoded image files.

        Raises:
            BadImageError: one of them is not a decodable image (the first such, by index).
        """
        from transfer.data.folders import decode_encoded

        return self.score_pixels(decode_encoded(contents, self.image_size))


class KerasScorer(PixelScorer):
    """A run's `model.keras`, or the ImageNet classifier as it comes.

    A call to `score_files` with at most `EAGER_IMAGES` images (`scorer_for`) (`transfer predict a.jpg b.jpg`)
    runs the model eagerly: tracing Keras' predict function costs more than it saves there (ResNet50
    on 2 images: the first call 0.8 s eagerly, 1.7 s through the traced function). Anything longer,
    and the server's calls, go through the traced function.
    """

    EAGER_IMAGES = 8

    def __init__(self, run: Run | ImageNetClassifier):
        self.run = run
        self.model = run.load_model() if isinstance(run, ImageNetClassifier) else load_run_model(run)
        self.labels = run.labels()
        self.config = run.config()
        self.image_size = int(self.model.input_shape[1])
        _check_labels(self.labels, int(self.model.output_shape[-1]), run.path)
        self.detector = None if isinstance(run, ImageNetClassifier) else run.detector()
        self.scoring = self.model if self.detector is None else self.with_detector(self.model)

    def with_detector(self, model):
        """`model` (the run's classifier, or its `inference_model`) with the run's detector beside it:
        `{"scores", "novelty"}` (`transfer.models.detector.with_novelty`)."""
        from transfer.models.detector import with_novelty
        from transfer.models.registry import run_backbone
        from transfer.models.saving import run_transfers

        return with_novelty(model, run_backbone(self.config), run_transfers(self.config), self.detector)

    def scorer_for(self, count: int):
        if count <= self.EAGER_IMAGES:
            return lambda pixels: self._outputs(self.scoring(pixels, training=False))
        return self.score_pixels

    def score_pixels(self, pixels: np.ndarray) -> Scored:
        return self._outputs(self.scoring.predict_on_batch(pixels))

    def _outputs(self, outputs) -> Scored:
        if isinstance(outputs, dict):
            return _scored(outputs["scores"], outputs["novelty"])
        return _scored(outputs)


class LiteRTScorer(PixelScorer):
    """A `.tflite` file of `transfer export --format litert`, run by LiteRT's interpreter."""

    def __init__(self, export: Export):
        extras.require("litert")
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(export.model_file), num_threads=_usable_cores())
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"Cannot load {export.model_file} with LiteRT ({str(error)[:300]}); export the run again.") from None
        self.input = self.interpreter.get_input_details()[0]
        outputs = self.interpreter.get_output_details()  # their names carry no key: the novelty is [N], the scores [N, classes]
        self.output = next(detail for detail in outputs if len(detail["shape"]) == 2)
        self.novelty = next((detail for detail in outputs if len(detail["shape"]) == 1), None)
        self.labels, self.config = export.labels(), export.config()
        self.image_size = int(self.input["shape"][1])
        self.batch = 0
        _check_labels(self.labels, int(self.output["shape"][-1]), export.path)

    def score_pixels(self, pixels: np.ndarray) -> Scored:
        pixels = np.asarray(pixels, np.float32)
        if len(pixels) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [len(pixels), *self.input["shape"][1:]])
            self.interpreter.allocate_tensors()
            self.batch = len(pixels)
        if self.input["dtype"] == np.uint8:  # int8 models: pixels quantized with the input's own scale
            scale, zero = self.input["quantization"]
            pixels = np.clip(np.round(pixels / scale + zero), 0, 255).astype(np.uint8)
        self.interpreter.set_tensor(self.input["index"], pixels)
        self.interpreter.invoke()
        scores = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] == np.uint8:
            scale, zero = self.output["quantization"]
            scores = (scores.astype(np.float32) - zero) * scale
        return _scored(scores, None if self.novelty is None else self.interpreter.get_tensor(self.novelty["index"]))


class OnnxScorer(PixelScorer):
    """A `.onnx` file of `transfer export --format onnx`, run by ONNX Runtime on the CPU."""

    def __init__(self, export: Export):
        extras.require("onnx")
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(export.model_file), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"Cannot load {export.model_file} with ONNX Runtime ({str(error)[:300]}); export the run again.") from None
        self.input = self.session.get_inputs()[0]
        self.outputs = [output.name for output in self.session.get_outputs() if output.name in ("scores", "novelty")]
        self.labels, self.config = export.labels(), export.config()
        self.image_size = int(self.input.shape[1])
        scores = next((output for output in self.session.get_outputs() if output.name == "scores"), self.session.get_outputs()[0])
        _check_labels(self.labels, int(scores.shape[-1]), export.path)

    def score_pixels(self, pixels: np.ndarray) -> Scored:
        names = self.outputs or [self.session.get_outputs()[0].name]  # an export before detectors: its one output
        found = dict(zip(names, self.session.run(names, {self.input.name: np.asarray(pixels, np.float32)})))
        return _scored(found.get("scores", found[names[0]]), found.get("novelty"))


class SavedModelScorer:
    """A SavedModel of `transfer export`, fed the raw bytes of each file: it decodes them itself. Its
    graph reads JPEG, PNG, GIF, BMP and WebP; HEIC and AVIF photos are made PNG bytes on the Python
    side first (`transfer.data.preprocessing.graph_bytes`), as a run's decoder does."""

    def __init__(self, export: Export):
        self.serve = export.load_signature()
        self.labels = export.labels()
        self.config = export.config()
        self.image_size = self.config.get("image_size")
        _check_labels(self.labels, int(self.serve.structured_outputs["scores"].shape[-1]), export.path)

    unknown_threshold = PixelScorer.unknown_threshold

    def score_pixels(self, pixels: np.ndarray) -> Scored:
        """Softmax for decoded images, sent through the signature as lossless PNGs."""
        if self.image_size is None:
            raise ModelLoadError("This SavedModel has no config.json (exported by an older version); export it again.")
        import tensorflow as tf

        encoded = [tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(p, 0, 255)), tf.uint8)).numpy() for p in pixels]
        return self._scores(encoded)

    def score_files(self, paths: Sequence[str], batch_size: int) -> Iterator[tuple[str, Scored | str]]:
        import tensorflow as tf

        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            try:
                with sigint_deferred():
                    scores = self._scores([_read(p) for p in batch])
                yield from zip(batch, scores.rows())
            except (tf.errors.OpError, OSError):
                for path in batch:  # isolate the file(s) that failed
                    try:
                        yield path, next(self._scores([_read(path)]).rows())
                    except (tf.errors.OpError, OSError) as error:
                        yield path, _reason(path, error)

    def score_encoded(self, contents: Sequence[bytes]) -> Scored:
        """Scores for encoded image files; an undecodable one is named with the reason the shared
        decoder gives (`transfer.data.folders.decode_encoded`), as a run's `KerasScorer` names it: the
        signature's own error is a bare "Graph execution error:"."""
        import tensorflow as tf

        try:
            return self._scores(list(contents))
        except tf.errors.OpError:
            from transfer.data.folders import decode_encoded

            for index, content in enumerate(contents):  # name the first that fails
                try:
                    self._scores([content])
                except tf.errors.OpError as error:
                    try:
                        decode_encoded([content], self.image_size or 32)
                    except BadImageError as bad:
                        raise BadImageError(index, bad.reason) from None
                    raise BadImageError(index, re.sub(r"^images\[0\] (is )?", "", op_error_message(error))) from None
            raise

    def _scores(self, contents: list[bytes]) -> Scored:
        import tensorflow as tf

        from transfer.data.preprocessing import graph_bytes

        contents = [graph_bytes(content) for content in contents]
        outputs = self.serve(images=tf.constant(contents, dtype=tf.string))
        return _scored(outputs["scores"].numpy(), outputs["novelty"].numpy() if "novelty" in outputs else None)


Scorer = KerasScorer | SavedModelScorer | LiteRTScorer | OnnxScorer

#: Export format -> its scorer.
EXPORT_SCORERS = {"savedmodel": SavedModelScorer, "litert": LiteRTScorer, "onnx": OnnxScorer}


def model_labels(path: Path | str) -> list[str]:
    """The class names of a run, an export or `imagenet:NAME`, without loading the model."""
    from transfer.models.imagenet import class_names

    return class_names() if is_imagenet(path) else open_model(path).labels()


def load_scorer(path: Path | str, weights: str | None = None) -> Scorer:
    """Scores with a run directory, an export of any format (`transfer.outputs.artifacts.open_model`), or the
    ImageNet classifier as it comes (`imagenet:NAME`, `weights` its `include_top` file or `None`).

    Raises:
        InvalidOptionError: `weights` given for anything but `imagenet:NAME`.
        DependencyMissingError: the export's runtime is an extra that is not installed.
    """
    if is_imagenet(path):
        return KerasScorer(ImageNetClassifier.open(path, weights))
    require(weights is None, "--weights", weights, "given only with imagenet:NAME (a run or an export has its own)")
    model = open_model(path)
    return KerasScorer(model) if isinstance(model, Run) else EXPORT_SCORERS[model.format](model)


def unknown_threshold(config: dict) -> float | None:
    """The novelty score beyond which a model answers `unknown`: its `config.json`'s detector's
    threshold; `None` where it recorded none."""
    threshold = (config.get("unknown_detector") or {}).get("threshold")
    return None if threshold is None else float(threshold)


def _usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container's CPU set limits it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_labels(labels: list[str], outputs: int, path: Path) -> None:
    if len(labels) != outputs:
        raise ModelLoadError(
            f"{path}: {LABELS} lists {len(labels)} labels but the model has {outputs} outputs. "
            f"The folder mixes files of different runs; train or export it again."
        )


def _reason(path: str, error: Exception) -> str:
    """Why the signature refused a file: the shared decoder's own words (the SavedModel decodes with
    it), or the signature's message when the decoder reads the file."""
    from transfer.data.folders import image_error

    reason = image_error(path)
    return reason if reason != "unreadable image" else op_error_message(error)


def _read(path: str) -> bytes:
    return Path(path).read_bytes()
