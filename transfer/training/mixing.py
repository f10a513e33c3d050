"""The training loss, with label smoothing, and MixUp and CutMix on training batches.

Without label smoothing or mixing the loss is sparse categorical cross-entropy on class indices.
With either, the targets are probability vectors (one-hot, then smoothed or mixed) and the loss is
`keras.losses.CategoricalCrossentropy`:

- label smoothing: a target of `(1 - x)` on the true class plus `x / classes` on every class;
- MixUp (Zhang et al., 2018): each image is `w * image + (1 - w) * other`, with `w ~ Beta(a, a)` per
  image and `other` another image of the batch, and its target the same mix of the two;
- CutMix (Yun et al., 2019): a box of `other` is pasted in, its area `1 - w` with `w ~ Beta(a, a)`,
  and the targets mix by the area kept (Keras computes it from the box's real-valued corners, so it
  differs from the share of whole pixels kept by less than a row and a column of pixels).

Both are Keras' own layers (`keras.layers.MixUp`, `keras.layers.CutMix`), applied in the `tf.data`
pipeline to training batches only; with both, each batch gets one of the two, at random (as timm's
`Mixup` does). Validation, the features of evaluation, prediction and exports never mix: the
mixing is not part of the model.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from transfer.training.options import TrainOptions


def uses_probability_targets(options: TrainOptions) -> bool:
    """Whether training needs probability-vector targets (`one_hot_targets`) instead of indices."""
    return bool(options.label_smoothing) or options.mixing


def make_loss(options: TrainOptions) -> keras.losses.Loss:
    """Cross-entropy on class indices, or on probability vectors with label smoothing; for
    multi-label data, binary cross-entropy on each label (0/1 targets, smoothed as asked)."""
    if options.multi_label:
        return keras.losses.BinaryCrossentropy(label_smoothing=options.label_smoothing)
    if not uses_probability_targets(options):
        return keras.losses.SparseCategoricalCrossentropy()
    return keras.losses.CategoricalCrossentropy(label_smoothing=options.label_smoothing)


def one_hot_targets(dataset: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """`(inputs, class index)` batches as `(inputs, one-hot float32 target)`."""
    return dataset.map(lambda inputs, label: (inputs, tf.one_hot(tf.cast(label, tf.int32), num_classes)))


def mixed_batches(dataset: tf.data.Dataset, options: TrainOptions, seed: int) -> tf.data.Dataset:
    """Batches of `(images, one-hot targets)` mixed by MixUp and/or CutMix as `options` ask."""
    mixers = []
    if options.mixup:
        mixers.append(keras.layers.MixUp(alpha=options.mixup, seed=seed))
    if options.cutmix:
        # a pair: Beta(a, a) as in the paper; one number would draw a itself from [0, number]
        mixers.append(keras.layers.CutMix(factor=(options.cutmix, options.cutmix), seed=seed + 1))

    def mix(batch, pick):
        images, targets = batch
        data = {"images": images, "labels": targets}
        if len(mixers) == 1:
            out = mixers[0](data, training=True)
        else:
            out = tf.cond(pick % 2 == 0, lambda: mixers[0](data, training=True), lambda: mixers[1](data, training=True))
        return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], tf.float32)

    picks = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(dataset, picks).map(mix).prefetch(tf.data.AUTOTUNE)  # sequential: the layers keep random state
