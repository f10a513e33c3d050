"""Backbone features computed once, so frozen-stage epochs cost the head alone.

While the backbone is frozen its output for an image does not change between epochs, so the
frozen stage extracts each image's pooled backbone features once (one forward pass) and trains the
classifier's `head` sub-model on them; the head's weights are the full classifier's.

With augmentation the backbone sees a different image every epoch, so caching one view per image
turns augmentation off for the frozen stage: that is the default (`--cached-views 1`; measured no
worse, README "The small-data recipe"), and the run says so. `views > 1` instead caches that many
augmented views per image (decoded once, augmented `views` times) and each epoch draws one of them
at random per image. Validation features are never augmented.

Unaugmented features are also kept on disk (`FeatureCache`, under `~/.cache/transfer/features` or
`--cache-dir`), one file per image, keyed by the feature extractor (its backbone, input size,
preprocessing and every weight) and by the image file's content, so a second `train`, `compare`
or `features` over the same images skips the backbone; a changed image, weight or size is a new key.
`transfer features` writes them as Parquet, and `--head logistic` fits scikit-learn's logistic
regression on them.

This module knows nothing of a run: an extractor and image paths in, arrays out, and the cache. The
stage code (`transfer.training.stages`) decides which images and what it keeps.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from transfer.models.registry import BackboneSpec
from transfer.models.classifier import pooling_layer
from transfer.data.folders import iter_decoded_batches
from transfer.outputs import artifacts, publishing
from transfer.core.errors import DataError, raise_if_stop_requested, sigint_deferred
from transfer.core.progress import SILENT, Reporter
from transfer.models.saving import load_run_model, run_transfers


def feature_extractor(model: keras.Model, spec: BackboneSpec) -> keras.Model:
    """Pixels -> pooled backbone features, sharing the classifier's layers and weights."""
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = model.get_layer("preprocess")(inputs)
    x = model.get_layer(spec.name)(x, training=False)
    return keras.Model(inputs, pooling_layer(model)(x), name=f"{spec.name}_features")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/transfer/features`, or `~/.cache/transfer/features`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transfer" / "features"


class FeatureCache:
    """Pooled features on disk: `ROOT/<extractor key>/<image sha256>.npy`."""

    def __init__(self, root: Path, extractor: keras.Model, image_size: int):
        self.folder = Path(root) / extractor_key(extractor, image_size)

    def get(self, digest: str) -> np.ndarray | None:
        path = self.folder / f"{digest}.npy"
        try:
            return np.load(path)
        except (OSError, ValueError):  # absent, or cut short by a crash: computed again
            return None

    def put(self, digest: str, features: np.ndarray) -> None:
        """Keeps `features`, unless the cache cannot be written (no permission, a read-only disk, a file
        where a folder should be): the cache is an optimisation, so the work goes on without it and
        `say_if_unwritable` tells the user, once."""
        if self.folder in _UNWRITABLE:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with publishing.atomic_path(self.folder / f"{digest}.npy") as temporary:
                np.save(temporary, features)
        except OSError as error:
            where = error.filename or self.folder
            _UNWRITABLE[self.folder] = f"{where}: {error.strerror or error}"

    def say_if_unwritable(self, reporter: Reporter) -> None:
        """Warns, once per process and cache folder, that features could not be kept."""
        reason = _UNWRITABLE.get(self.folder)
        if reason is not None and self.folder not in _SAID:
            _SAID.add(self.folder)
            reporter.warning(
                f"The feature cache cannot be written ({reason}); going on without it (features are computed "
                f"again next time). Give --cache-dir a folder you can write to, or set XDG_CACHE_HOME."
            )


#: Cache folders that could not be written in this process (with why), and those the user was told of.
_UNWRITABLE: dict[Path, str] = {}
_SAID: set[Path] = set()


def extractor_key(extractor: keras.Model, image_size: int) -> str:
    """What the features depend on: the layers (names, configuration), every weight and the input size."""
    digest = hashlib.sha256(f"{image_size}".encode())
    for layer in extractor.layers:
        digest.update(f"{layer.name}:{type(layer).__name__}".encode())
        config = layer.get_config() if hasattr(layer, "get_config") else {}
        for key in ("mode", "grayscale", "scale", "offset"):  # the Preprocess layer's convention
            digest.update(f"{key}={config.get(key)}".encode())
    for weight in extractor.weights:
        value = keras.ops.convert_to_numpy(weight)
        digest.update(str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:32]


def extract_features(
    extractor: keras.Model,
    paths: Sequence[str],
    batch_size: int,
    *,
    augmentation: keras.Layer | None = None,
    views: int = 1,
    cache: FeatureCache | None = None,
    reporter: Reporter = SILENT,
    description: str = "Extracting features",
) -> np.ndarray:
    """Features of every image, `[N, D]` for one view or `[N, views, D]`, in `paths` order.

    Each batch is decoded once; with `augmentation`, each of the `views` is a fresh random
    augmentation of it (the layers run in training mode), else the images are used as decoded.
    With a `cache` (unaugmented features only), images already there skip the backbone. Images are
    decoded at the extractor's own input size.

    Raises:
        DataError: an image that decoded when the dataset was checked no longer does.
    """
    image_size = int(extractor.input_shape[1])
    if cache is not None and augmentation is None:
        digest_of = {path: publishing.sha256(path) for path in paths}
        digests = [digest_of[path] for path in paths]
        found = {digest: cache.get(digest) for digest in set(digests)}
        missing = sorted({path for path in paths if found[digest_of[path]] is None})
        if missing:
            computed = extract_features(extractor, missing, batch_size, reporter=_WithCached(reporter, len(digest_of) - len(missing)),
                                        description=description)
            for path, features in zip(missing, computed):
                cache.put(digest_of[path], features)
                found[digest_of[path]] = features
            cache.say_if_unwritable(reporter)
        elif paths:
            reporter.message(f"{description}: all {len(paths)} from the feature cache.")
        return np.stack([found[digest] for digest in digests]) if paths else np.zeros((0, 0), np.float32)
    batches = []
    decoded = iter_decoded_batches(paths, image_size, batch_size)
    with reporter.progress(description, total=len(paths) * views) as progress:
        while True:
            with sigint_deferred():  # Ctrl-C inside TensorFlow's calls is raised once they return
                batch = next(decoded, None)
                if batch is None:
                    break
                if batch.failed:
                    path, reason = batch.failed[0]
                    raise DataError(f"{path} can no longer be read ({reason}); it was readable when checked.")
                per_view = []
                for _ in range(views):
                    pixels = batch.pixels if augmentation is None else augmentation(batch.pixels, training=True)
                    per_view.append(np.asarray(extractor.predict_on_batch(pixels)))
            raise_if_stop_requested()  # while training: Ctrl-C stops here (`transfer.core.errors.stop_at_safe_points`)
            progress.advance(len(batch.paths) * views)
            batches.append(np.stack(per_view, axis=1))
    features = np.concatenate(batches)
    return features[:, 0] if views == 1 else features


class _WithCached(Reporter):
    """`reporter`, its progress counting `cached` images already done (from the feature cache) and
    saying so (`Backbone features, train, 10 of 120 cached`: the bar runs to 120)."""

    def __init__(self, reporter: Reporter, cached: int):
        self.reporter, self.cached = reporter, cached

    def message(self, text: str) -> None:
        self.reporter.message(text)

    def warning(self, text: str) -> None:
        self.reporter.warning(text)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator:
        if not self.cached:
            with self.reporter.progress(description, total) as progress:
                yield progress
            return
        images = total + self.cached
        with self.reporter.progress(f"{description}, {self.cached} of {images} cached", images) as progress:
            progress.advance(self.cached)
            yield progress


def features_dataset(
    features: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0
) -> tf.data.Dataset:
    """Batched `(features, label)`; for `[N, views, D]` features, one random view per image per epoch."""
    dataset = tf.data.Dataset.from_tensor_slices((features.astype(np.float32), labels))
    if features.ndim == 3:
        views = features.shape[1]
        picks = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, picks).map(
            lambda example, pick: (example[0][pick % views], example[1])
        )
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def extractor_and_cache(model: keras.Model, spec: BackboneSpec, options) -> tuple[keras.Model, FeatureCache]:
    """The frozen-stage feature extractor of `model` and the disk cache its features go to (`options.cache_dir`)."""
    extractor = feature_extractor(model, spec)
    return extractor, FeatureCache(options.cache_dir or default_cache_dir(), extractor, options.image_size)


def model_feature_extractor(model_ref: str | Path, weights: str | None = None, preprocess: str | None = None,
                            reporter: Reporter = SILENT) -> tuple[keras.Model, int]:
    """`(pixels -> pooled features, input size)` of a run (its backbone, or a from-scratch baseline's
    layers up to its `feature_layer`, flattened), of `imagenet:NAME` (the backbone without its top,
    globally average pooled), or of a model file or keras-hub preset (`transfer.models.external`:
    below its classifier, globally average pooled; `preprocess` as `--preprocess` of `train`)."""
    from transfer.models.registry import get_backbone, load_application, run_backbone
    from transfer.models.external import FILE_SUFFIX, HUB_PREFIX
    from transfer.models.imagenet import ImageNetClassifier, is_imagenet
    from transfer.core.errors import require
    from transfer.data.preprocessing import Preprocess

    if is_imagenet(model_ref):
        spec = ImageNetClassifier.open(model_ref, weights).spec
        size = spec.input_size
        backbone = load_application(spec, include_top=False, weights=weights or "imagenet", input_shape=(size, size, 3))
        inputs = keras.Input((size, size, 3), name="image")
        x = Preprocess(spec.preprocess_mode, dtype="float32", name="preprocess")(inputs)
        pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone(x, training=False))
        return keras.Model(inputs, pooled, name=f"imagenet_{spec.name}_features"), size
    require(weights is None, "--weights", weights, "given only with imagenet:NAME (a run or model file has its own)")
    if str(model_ref).startswith(HUB_PREFIX) or Path(model_ref).suffix.lower() == FILE_SUFFIX:
        from transfer.models.classifier import build_classifier

        spec = get_backbone(str(model_ref), preprocess)
        if spec.note:
            reporter.message(spec.note)
        classifier = build_classifier(spec, num_classes=2, image_size=spec.input_size, weights=None)
        return feature_extractor(classifier, spec), spec.input_size
    require(preprocess is None, "--preprocess", preprocess, "given only with a model file (a run has its own)")
    run = artifacts.Run.open(model_ref)
    model, spec = load_run_model(run), run_backbone(run.config())
    return frozen_extractor(model, spec, run_transfers(run.config())), int(model.input_shape[1])


def frozen_extractor(model: keras.Model, spec: BackboneSpec, transfers: bool) -> keras.Model:
    """Pixels -> features of a classifier: its backbone's pooled features (`feature_extractor`), or
    for a from-scratch baseline its layers up to its `feature_layer`, flattened."""
    if transfers:
        return feature_extractor(model, spec)
    size = int(model.input_shape[1])
    baseline = model.get_layer(spec.name)
    convolutions = keras.Model(baseline.inputs, baseline.get_layer(spec.feature_layer).output)
    inputs = keras.Input((size, size, 3), name="image")
    x = convolutions(model.get_layer("preprocess")(inputs), training=False)
    return keras.Model(inputs, keras.layers.Flatten(name="flatten_features")(x), name=f"{spec.name}_features")
