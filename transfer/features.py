"""Backbone features computed once, so frozen-stage epochs cost the head alone.

While the backbone is frozen its output for an image does not change between epochs, so the
frozen stage extracts each image's pooled backbone features once (one forward pass) and trains the
classifier's `head` sub-model on them; the head's weights are the full classifier's.

With augmentation the backbone sees a different image every epoch, so caching one view per image
would silently turn augmentation off. `views > 1` instead caches that many augmented views per
image (decoded once, augmented `views` times) and each epoch draws one of them at random per image.
Validation features are never augmented.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import keras
import numpy as np
import tensorflow as tf

from transfer.backbones import BackboneSpec
from transfer.classifier import pooling_layer
from transfer.data import iter_decoded_batches
from transfer.errors import DataError
from transfer.progress import SILENT, Reporter

if TYPE_CHECKING:
    from transfer.stages import RunState


def feature_extractor(model: keras.Model, spec: BackboneSpec) -> keras.Model:
    """Pixels -> pooled backbone features, sharing the classifier's layers and weights."""
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = model.get_layer("preprocess")(inputs)
    x = model.get_layer(spec.name)(x, training=False)
    return keras.Model(inputs, pooling_layer(model)(x), name=f"{spec.name}_features")


def extract_features(
    extractor: keras.Model,
    paths: Sequence[str],
    image_size: int,
    batch_size: int,
    *,
    augmentation: keras.Layer | None = None,
    views: int = 1,
    reporter: Reporter = SILENT,
    description: str = "Extracting features",
) -> np.ndarray:
    """Features of every image, `[N, D]` for one view or `[N, views, D]`, in `paths` order.

    Each batch is decoded once; with `augmentation`, each of the `views` is a fresh random
    augmentation of it (the layers run in training mode), else the images are used as decoded.

    Raises:
        DataError: an image that decoded when the dataset was checked no longer does.
    """
    batches = []
    with reporter.progress(description, total=len(paths) * views) as progress:
        for batch in iter_decoded_batches(paths, image_size, batch_size):
            if batch.failed:
                path, reason = batch.failed[0]
                raise DataError(f"{path} can no longer be read ({reason}); it was readable when checked.")
            per_view = []
            for _ in range(views):
                pixels = batch.pixels if augmentation is None else augmentation(batch.pixels, training=True)
                per_view.append(np.asarray(extractor.predict_on_batch(pixels)))
                progress.advance(len(batch.paths))
            batches.append(np.stack(per_view, axis=1))
    features = np.concatenate(batches)
    return features[:, 0] if views == 1 else features


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


def cached_feature_datasets(run: RunState) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """`(train, val)` datasets of pooled backbone features, for fitting the head of `run` alone.

    Training images give one view each, or `options.cached_views` augmented views with
    augmentation on; validation images are never augmented.
    """
    options, model = run.options, run.model
    extractor = feature_extractor(model, run.spec)
    views = options.cached_views if options.augment else 1
    train_features = extract_features(
        extractor, run.train_paths, options.image_size, options.batch_size,
        augmentation=model.get_layer("augmentation") if options.augment else None, views=views,
        reporter=run.reporter,
        description=f"Backbone features, train ({views} view{'s' if views > 1 else ''} per image)",
    )
    val_features = extract_features(
        extractor, run.val_paths, options.image_size, options.batch_size,
        reporter=run.reporter, description="Backbone features, validation",
    )
    return (
        features_dataset(train_features, run.train_labels, run.global_batch, shuffle=True, seed=options.seed),
        features_dataset(val_features, run.val_labels, run.global_batch, shuffle=False),
    )
