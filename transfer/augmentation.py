"""Training-time augmentation as Keras preprocessing layers.

The layers live inside the model, act only when it is called with `training=True`, and pass
images through unchanged at prediction and in the exported SavedModel.
"""

from __future__ import annotations

import keras
from keras import layers

from transfer.options import FLIPS


def build_augmentation(flip: str = "horizontal", seed: int | None = None) -> keras.Sequential:
    """Random flip, rotation (+-10%), zoom (+-10%), translation (+-10%) and contrast (+-20%).

    Args:
        flip: one of `FLIPS`; use `"none"` for data whose mirror image means something else
            (digits, text).
        seed: base seed for the random layers.
    """
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {FLIPS}; received {flip!r}.")
    steps = [] if flip == "none" else [layers.RandomFlip(flip, seed=seed, name="random_flip")]
    steps += [
        layers.RandomRotation(0.1, fill_mode="reflect", seed=seed, name="random_rotation"),
        layers.RandomZoom(0.1, fill_mode="reflect", seed=seed, name="random_zoom"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed, name="random_translation"),
        layers.RandomContrast(0.2, value_range=(0, 255), seed=seed, name="random_contrast"),
    ]
    return keras.Sequential(steps, name="augmentation")
