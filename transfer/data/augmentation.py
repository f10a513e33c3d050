"""Training-time augmentation as Keras preprocessing layers.

The layers live inside the model as one block named `AUGMENTATION`, act only when it is called
with `training=True`, and pass images through unchanged at prediction. Exports leave the block out
(`transfer.models.classifier.inference_model`).
"""

from __future__ import annotations

import keras
from keras import layers

from transfer.core.choices import FLIPS


#: The name of the block of augmentation layers in every classifier.
AUGMENTATION = "augmentation"

#: The random transforms, in the order they apply: flip, rotation (+-10%), zoom (+-10%),
#: translation (+-10%) and contrast (+-20%).
TRANSFORMS = ("flip", "rotation", "zoom", "translation", "contrast")


def build_augmentation(
    flip: str = "horizontal", seed: int | None = None, transforms: tuple[str, ...] = TRANSFORMS
) -> keras.Sequential:
    """The `transforms` (a subset of `TRANSFORMS`) as one block of Keras preprocessing layers.

    Args:
        flip: one of `FLIPS`; use `"none"` for data whose mirror image means something else
            (digits, text).
        seed: base seed for the random layers.
        transforms: which transforms; a backbone's own list is `BackboneSpec.augmentations`.
    """
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {FLIPS}; received {flip!r}.")
    unknown = set(transforms) - set(TRANSFORMS)
    if unknown:
        raise ValueError(f"transforms must be among {TRANSFORMS}; received {sorted(unknown)}.")
    make = {
        "flip": lambda: layers.RandomFlip(flip, seed=seed, name="random_flip"),
        "rotation": lambda: layers.RandomRotation(0.1, fill_mode="reflect", seed=seed, name="random_rotation"),
        "zoom": lambda: layers.RandomZoom(0.1, fill_mode="reflect", seed=seed, name="random_zoom"),
        "translation": lambda: layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed, name="random_translation"),
        "contrast": lambda: layers.RandomContrast(0.2, value_range=(0, 255), seed=seed, name="random_contrast"),
    }
    chosen = [name for name in TRANSFORMS if name in transforms and not (name == "flip" and flip == "none")]
    return keras.Sequential([make[name]() for name in chosen], name=AUGMENTATION)
