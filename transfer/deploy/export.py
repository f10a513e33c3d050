"""`transfer export`: a run (or `imagenet:NAME`) as a file to ship, checked against the run.

| `--format` | file | runtime | input | output |
|---|---|---|---|---|
| `savedmodel` | `saved_model.pb`, `variables/` | TensorFlow, TF Serving | `images`: `tf.string [N]`, encoded image files | `labels`, `probabilities` (top k), `scores`, `answer`; with a detector `novelty`, `why_unknown` |
| `litert` | `model.tflite` | LiteRT (`ai-edge-litert`), TFLite on devices | `image`: `float32 [N, S, S, 3]` RGB pixels 0-255; `uint8` with `--quantize int8` | `scores`: `[N, classes]` softmax; with a detector `novelty`: `[N]` |
| `onnx` | `model.onnx` | ONNX Runtime | `image`: `float32 [N, S, S, 3]` RGB pixels 0-255 | `scores`: `[N, classes]` softmax; with a detector `novelty`: `[N]` |

A run with an open-set detector (`novelty.npz`, `transfer.models.detector`) carries it inside every
format: the file computes each image's novelty score itself, and `config.json`'s `unknown_detector`
holds the threshold beyond which the answer is `unknown` (the SavedModel applies it in its `answer`).

Every format carries the model's own preprocessing (its `Preprocess` layer) and none carries the
augmentation block (`transfer.models.classifier.inference_model`). The SavedModel also decodes and resizes
the image bytes in its graph, with the decoder of training (`transfer.data.preprocessing.decode_image`);
for LiteRT and ONNX the caller decodes and resizes to S x S (bilinear). `labels.txt` (the output
order) and `config.json` are written beside the model; an ONNX file also holds the labels in its
metadata (`labels`, a JSON list).

LiteRT quantization (`--quantize`): `dynamic` (int8 weights, float activations), `float16` (float16
weights), `int8` (full integer: weights and activations int8, uint8 pixels in and uint8 scores out,
calibrated on up to `CALIBRATION_IMAGES` images of the run's training split).

Each export is checked before it is published: the artifact runs in its own runtime on the run's
validation images (or the images of `images`), and its top-1 answers are compared with the Keras
model's. Below `min_agreement` nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from transfer.core import extras
from transfer.core.choices import EXPORT_FORMATS, QUANTIZATIONS
from transfer.core.errors import DataError, ExportCheckError, ModelLoadError, require
from transfer.core.progress import SILENT, Reporter
from transfer.deploy import converters
from transfer.evaluation.prediction import (
    UNKNOWN,
    collect_images,
    resolve_min_confidence,
    resolve_top_k,
)
from transfer.models.imagenet import ImageNetClassifier, is_imagenet
from transfer.outputs import artifacts, layout, publishing

#: Export format -> the extra its converter and runtime come from.
FORMAT_EXTRAS = {"litert": "litert", "onnx": "onnx"}
#: The agreement with the Keras model an export must reach by default.
MIN_AGREEMENT = 0.999
MIN_AGREEMENT_INT8 = 0.98
#: A quantized single-label export (int8, dynamic) is held, by default, to the Keras model's own
#: stability: its agreement with itself when every pixel moves by up to `PIXEL_NOISE` levels of 255
#: (less than re-saving a JPEG changes). A weak run has many decisions that close (flowers at 10 photos
#: a class: the Keras model agrees with itself on 0.967 of them, int8 on 0.960: docs/benchmarks.md,
#: "Int8 against Keras on weak runs"); `NOISE_MARGIN` is the sampling error of comparing two such
#: shares on a few hundred images. `MIN_AGREEMENT_INT8` still applies where the model is stable.
PIXEL_NOISE = 2
NOISE_MARGIN = 0.03
#: A check image is confident where the Keras model's top probability reaches this; the agreement
#: is reported on those and on the others (low-margin decisions, which any rounding may flip).
CONFIDENT = 0.5
#: What a refused quantized export advises: float16 keeps float32's agreement (int8 weights flip low-margin images).
ADVICE = {q: "Try --quantize float16 (half-size weights, float computation), or lower --min-agreement."
          for q in ("int8", "dynamic")}
#: Images of the training split that calibrate full-integer quantization.
CALIBRATION_IMAGES = 200
#: At most this many images check an export.
CHECK_IMAGES = 1000


@dataclass
class Exported:
    """What `export` wrote, and how it compares with the Keras model."""

    path: Path
    format: str
    quantize: str
    size_bytes: int
    agreement: float
    images_checked: int
    max_difference: float
    min_agreement: float
    agreement_of: str = "top-1"  # or "label-set": a multi-label model's decisions
    agreement_split: str = ""  # single-label: the agreement on confident images and on the others


@dataclass(frozen=True)
class ExportOptions:
    """What to write and how it is checked.

    Attributes:
        format: one of `EXPORT_FORMATS`.
        quantize: LiteRT only: one of `QUANTIZATIONS`.
        top_k: SavedModel only: labels per image in its `labels`/`probabilities` outputs; default min(3, classes).
        min_agreement: the share of check images whose top-1 label must match the Keras model's;
            default `MIN_AGREEMENT_INT8` for int8, else `MIN_AGREEMENT`.
        min_confidence: the SavedModel's `answer` is `unknown` where the top probability is below it.
        threshold: a multi-label run's one threshold for every label, in place of its own (`config.json`).
        images: a folder of images to calibrate and check on, instead of the run's own split
            (required for `imagenet:NAME`, which has none).
    """

    format: str = "savedmodel"
    quantize: str = "none"
    top_k: int | None = None
    min_agreement: float | None = None
    min_confidence: float = 0.0
    threshold: float | None = None
    images: Path | None = None


def export(
    model_ref: Path | str,
    out_dir: Path,
    options: ExportOptions = ExportOptions(),
    *,
    weights: str | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> Exported:
    """Writes the run at `model_ref` (or `imagenet:NAME`) to `out_dir` as `options` say, checked.

    Args:
        weights: for `imagenet:NAME`, its `include_top` weights file; `None` lets Keras download them.
        force: replace an earlier export at `out_dir`.

    Raises:
        InvalidOptionError: an option out of range, or one that does not apply to `format`.
        DependencyMissingError: the format's extra is not installed.
        ModelLoadError: `model_ref` is not a complete run.
        OutputExistsError: something is at `out_dir` (`force` replaces only an earlier export).
        ExportCheckError: the export agrees with the Keras model on fewer images than `min_agreement`.
    """
    format, quantize, top_k, images = options.format, options.quantize, options.top_k, options.images
    min_agreement, min_confidence = options.min_agreement, options.min_confidence
    out_dir = Path(out_dir)
    require(format in EXPORT_FORMATS, "--format", format, " | ".join(EXPORT_FORMATS))
    require(quantize in QUANTIZATIONS, "--quantize", quantize, " | ".join(QUANTIZATIONS))
    require(quantize == "none" or format == "litert", "--quantize", quantize, "given only with --format litert")
    require(top_k is None or format == "savedmodel", "--top-k", top_k, "given only with --format savedmodel (the others output every score)")
    against_noise = min_agreement is None and quantize in ("int8", "dynamic")  # unless a threshold is given
    if min_agreement is None:
        min_agreement = MIN_AGREEMENT_INT8 if quantize in ("int8", "dynamic") else MIN_AGREEMENT
    require(0 <= min_agreement <= 1, "--min-agreement", min_agreement, "a share between 0 and 1")
    if format in FORMAT_EXTRAS:
        extras.require(FORMAT_EXTRAS[format])
    from transfer.metrics.multilabel import is_multi_label, thresholds_of

    source = _open_source(model_ref, weights)
    class_names = source.labels()
    multi = is_multi_label(source.config())
    require(not multi or not min_confidence, "--min-confidence", min_confidence,
            "given only for a single-label model (this one is multi-label: --threshold sets one threshold for all labels)")
    require(multi or options.threshold is None, "--threshold", options.threshold, "given only for a multi-label model")
    thresholds = thresholds_of(source.config(), class_names, options.threshold) if multi else None
    require(not multi or top_k is None, "--top-k", top_k, "left out for a multi-label model (its SavedModel's labels output "
            "has a place for every label, given or empty)")
    min_confidence = resolve_min_confidence(min_confidence, class_names, {})
    k = resolve_top_k(top_k, len(class_names), reporter)
    check_paths, calibration_paths = _check_and_calibration_images(source, images, format, quantize)
    run_data = () if isinstance(source, ImageNetClassifier) else tuple(artifacts.data_folders(source.path))
    publishing.check_destination(out_dir, kind="export", force=force, data=(images, *run_data))
    where = f"--images {images}" if images is not None else "the run's validation split"
    reporter.message(f"The export is checked on {len(check_paths)} images of {where}"
                     + (f", and int8 calibrated on {len(calibration_paths)}." if calibration_paths else "."))

    from transfer.evaluation.scorers import EXPORT_SCORERS, KerasScorer
    from transfer.models.classifier import inference_model

    keras_scorer = KerasScorer(source)
    model = inference_model(keras_scorer.model)
    if keras_scorer.detector is not None:  # the detector inside the file: `scores` and `novelty` out
        model = keras_scorer.with_detector(model)
    config = {**source.config(), "export": {"format": format, "quantize": quantize, "min_confidence": min_confidence}}
    if multi:  # the thresholds the export's users apply (`--threshold` replaces the run's)
        config["thresholds"] = dict(zip(class_names, thresholds.tolist()))
    with publishing.staged(out_dir, "export") as staging:
        reporter.message(f"Converting to {format}" + (f" ({quantize})" if quantize != "none" else ""))
        if format == "savedmodel":
            _write_savedmodel(model, staging, class_names, (k, min_confidence, keras_scorer.unknown_threshold), thresholds)
        elif format == "litert":
            converters.write_litert(model, staging / layout.LITERT_MODEL, quantize, calibration_paths)
        else:
            converters.write_onnx(model, staging / layout.ONNX_MODEL, class_names, config.get("thresholds"))
        artifacts.Export(staging).write_metadata(class_names, config)
        exported = artifacts.Export.open(staging)
        agreement, checked, difference, split = _agreement(keras_scorer, EXPORT_SCORERS[format](exported), check_paths, reporter,
                                                    thresholds=thresholds)
        size = _size(exported.model_file)
        stability = None
        if against_noise and not multi and agreement < min_agreement:
            stability = _self_agreement(keras_scorer, check_paths, reporter)
            min_agreement = round(min(min_agreement, stability - NOISE_MARGIN), 4)
            split += f"; the Keras model agrees with itself on {stability:.1%} with +-{PIXEL_NOISE} levels of pixel noise"
        if agreement < min_agreement:
            raise ExportCheckError(
                f"The {format}{f' {quantize}' if quantize != 'none' else ''} export agrees with the Keras model on "
                f"{agreement:.1%} of {checked} images{f' ({split})' if split else ''}, below --min-agreement {min_agreement}; "
                f"nothing was written. " + (ADVICE[quantize] if quantize in ADVICE else
                   "Lower --min-agreement only if that difference is acceptable.")
            )
        summary = {"agreement": agreement, "images_checked": checked, "max_difference": difference, "agreement_split": split,
                   "min_agreement": min_agreement, "self_agreement_under_noise": stability, "size_bytes": size}
        publishing.write_json(staging / layout.CONFIG, {**config, "export": {**config["export"], **summary}})
    return Exported(out_dir, format, quantize, size, agreement, checked, difference, min_agreement,
                    "label-set" if multi else "top-1", split)


def _open_source(model_ref: Path | str, weights: str | None):
    if is_imagenet(model_ref):
        return ImageNetClassifier.open(model_ref, weights)
    require(weights is None, "--weights", weights, "given only with imagenet:NAME (a run has its own)")
    try:
        opened = artifacts.open_model(model_ref)
    except ModelLoadError:
        opened = None  # Run.open below says what is missing
    if isinstance(opened, artifacts.Export):
        raise ModelLoadError(f"{model_ref} is already an export; export takes a run directory.")
    return artifacts.Run.open(model_ref)


def _check_and_calibration_images(source, images: Path | None, format: str, quantize: str) -> tuple[list[str], list[str]]:
    """The images that check the export, and those that calibrate int8 (empty otherwise)."""
    if images is not None:
        paths, _ = collect_images([Path(images)])
        if not paths:
            raise DataError(f"--images {images} holds no image file to check the export on.")
        return paths[:CHECK_IMAGES], paths[:CALIBRATION_IMAGES] if quantize == "int8" else []
    if isinstance(source, ImageNetClassifier):
        raise DataError(
            f"{source.path} has no validation images to check the export on; pass --images FOLDER (photos of the "
            f"kind it will see; int8 also calibrates on them)."
        )
    split = source.split()
    check = split.loc[split["split"] == "val", "path"].tolist()[:CHECK_IMAGES]
    calibration = split.loc[split["split"] == "train", "path"].tolist() if quantize == "int8" else []
    if calibration:  # spread over the classes: split.csv is grouped by class
        calibration = calibration[:: max(1, len(calibration) // CALIBRATION_IMAGES)][:CALIBRATION_IMAGES]
    return check, calibration


def _self_agreement(reference, paths: Sequence[str], reporter: Reporter, seed: int = 0) -> float:
    """The share of `paths` whose top-1 label the Keras model of `reference` keeps when each pixel
    moves by a random whole number of levels in [-PIXEL_NOISE, PIXEL_NOISE] (seeded)."""
    from transfer.data.folders import iter_decoded_batches

    generator, same, count = np.random.default_rng(seed), 0, 0
    with reporter.progress("Checking: the Keras model with pixel noise", total=len(paths)) as progress:
        for batch in iter_decoded_batches(paths, reference.image_size, batch_size=32):
            if not batch.paths:
                continue
            pixels = np.asarray(batch.pixels, np.float32)
            noisy = np.clip(pixels + generator.integers(-PIXEL_NOISE, PIXEL_NOISE + 1, pixels.shape), 0, 255)
            clean, moved = reference.score_pixels(pixels).probabilities, reference.score_pixels(noisy.astype(np.float32)).probabilities
            same, count = same + int(np.sum(clean.argmax(1) == moved.argmax(1))), count + len(pixels)
            progress.advance(len(pixels))
    return same / max(count, 1)


def _agreement(reference, exported, paths: Sequence[str], reporter: Reporter,
               thresholds: np.ndarray | None = None) -> tuple[float, int, float, str]:
    """Top-1 agreement of two scorers on `paths` (with a multi-label model's `thresholds`: the share
    of images given the same label set), the number of images both scored, the largest absolute
    difference of their probabilities, and (single-label) the agreement where the reference is
    confident (top-1 probability >= `CONFIDENT`) and on the rest, as a clause. Where the model has an
    open-set detector, an image agrees only if both also answer it `unknown` or neither does (its
    novelty beyond the reference's threshold), and the clause says how many such answers differ and
    the largest difference of the novelty scores."""
    scores = []
    for scorer, description in ((reference, "Checking: the Keras model"), (exported, "Checking: the export")):
        scored = {}
        with reporter.progress(description, total=len(paths)) as progress:
            for path, row in scorer.score_files(paths, batch_size=32):
                progress.advance()
                if not isinstance(row, str):
                    scored[path] = row
        scores.append(scored)
    readable = [path for path in paths if path in scores[0]]  # an image the export fails on counts against it
    if not readable:
        raise DataError(
            f"None of the {len(paths)} check images could be read (the first: {paths[0] if paths else 'none'}); "
            f"if the data moved, pass --images FOLDER."
        )
    common = [path for path in readable if path in scores[1]]
    if not common:
        return 0.0, len(readable), float("nan"), ""
    a, b = (np.stack([scored[path].probabilities for path in common]) for scored in scores)
    if thresholds is not None:
        same, split = ((a >= thresholds) == (b >= thresholds)).all(axis=1), ""
    else:
        same, confident = a.argmax(1) == b.argmax(1), a.max(1) >= CONFIDENT
        split = "; ".join(f"{np.mean(same[part]):.1%} of the {np.sum(part)} {where}" for part, where in (
            (confident, f"where the Keras model's top probability is at least {CONFIDENT}"), (~confident, "others")) if part.any())
    cut = reference.unknown_threshold
    if cut is not None:
        novelty = [np.array([scored[path].novelty for path in common], np.float64) for scored in scores]
        if any(np.isnan(values).any() for values in novelty):  # an export without its detector
            raise ExportCheckError("The export gives no novelty score, though the run has an open-set detector; nothing was written.")
        flips = (novelty[0] > cut) != (novelty[1] > cut)
        same &= ~flips
        split = "; ".join(filter(None, [split, f"'unknown' answered differently on {int(flips.sum())} "
                                        f"(novelty differs by at most {np.abs(novelty[0] - novelty[1]).max():.2g})"]))
    return float(np.sum(same) / len(readable)), len(readable), float(np.abs(a - b).max()), split


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_savedmodel(model, folder: Path, class_names: list[str], answers: tuple[int, float, float | None],
                      thresholds: np.ndarray | None = None) -> None:
    """The SavedModel: encoded image bytes in, decoded in the graph by the decoder of training.
    `answers`: the labels per image k, the minimum confidence, and the open-set detector's threshold
    (`None` without one). With a multi-label model's `thresholds`, `labels` has a place for every
    label, most probable first, holding the label where its probability reaches its threshold and ""
    elsewhere; `answer` is the labels given, joined by `;`. A model with a detector also outputs
    `novelty`, its answer is `unknown` beyond the threshold, and `why_unknown` says `novel` or
    `low_confidence` (or "")."""
    import keras
    import tensorflow as tf

    from transfer.data.preprocessing import NOT_AN_IMAGE, decode_image, is_image_format
    from transfer.evaluation.prediction import LOW_CONFIDENCE, NOVEL

    k, min_confidence, cut = answers
    size, classes = int(model.input_shape[1]), len(class_names)
    labels = tf.constant(class_names)

    def decode(indexed):
        index, contents = indexed
        known = tf.debugging.Assert(is_image_format(contents), [tf.strings.format(
            "images[{}] is " + NOT_AN_IMAGE, index
        )])
        with tf.control_dependencies([known]):
            return decode_image(contents, size)

    def classify(images):
        indices = tf.range(tf.size(images, out_type=tf.int64))
        pixels = tf.map_fn(decode, (indices, images), fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))
        outputs = model(pixels, training=False)
        scores = tf.cast(outputs["scores"] if cut is not None else outputs, tf.float32)
        if thresholds is not None:
            top = tf.math.top_k(scores, k=classes)
            given = top.values >= tf.gather(tf.constant(thresholds, tf.float32), top.indices)
            names = tf.where(given, tf.gather(labels, top.indices), "")
            answer = tf.strings.regex_replace(tf.strings.reduce_join(tf.where(given, tf.strings.join([";", names]), ""), axis=1), "^;", "")
            found = {"labels": names, "probabilities": top.values, "scores": scores, "answer": answer}
            low = tf.zeros_like(answer, tf.bool)
        else:
            top = tf.math.top_k(scores, k=k)
            low = top.values[:, 0] < min_confidence
            answer = tf.where(low, UNKNOWN, tf.gather(labels, top.indices[:, 0]))
            found = {"labels": tf.gather(labels, top.indices), "probabilities": top.values, "scores": scores, "answer": answer}
        if cut is None:
            return found
        novel = tf.cast(outputs["novelty"], tf.float32) > cut
        why = tf.where(novel, NOVEL, tf.where(low, LOW_CONFIDENCE, ""))
        return {**found, "answer": tf.where(novel, UNKNOWN, found["answer"]), "novelty": tf.cast(outputs["novelty"], tf.float32),
                "why_unknown": why}

    def serve(images):
        places = classes if thresholds is not None else k
        nothing = {  # an empty batch gets empty answers of the same shapes
            "labels": tf.zeros([0, places], tf.string), "probabilities": tf.zeros([0, places]), "scores": tf.zeros([0, classes]),
            "answer": tf.zeros([0], tf.string),
            **({"novelty": tf.zeros([0]), "why_unknown": tf.zeros([0], tf.string)} if cut is not None else {}),
        }
        return tf.cond(tf.size(images) > 0, lambda: classify(images), lambda: nothing)

    # No archive.track(model): the endpoint captures the variables itself, and tracking them as well
    # would store every weight twice (keras-team/keras#23553).
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serve, input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    archive.write_out(str(folder), verbose=False)
