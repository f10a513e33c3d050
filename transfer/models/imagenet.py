"""The ImageNet classifier as it comes: `imagenet:NAME` for each pretrained registry backbone (`imagenet:resnet50`, `imagenet:convnext_tiny`...).

The complete `keras.applications` model (`include_top=True`, its own input size) under the same
`Preprocess` layer as every run, so `transfer predict` and `transfer export` treat it like a run
directory: raw pixels in, the 1000 ImageNet probabilities out. Its class names ship with the
project (`imagenet_classes.txt`: WordNet ID and Keras' name, in Keras' class order, which is the
order of the sorted WordNet IDs) because Keras downloads its class index at prediction time, which
fails offline. Two names occur twice in Keras' list and are told apart here: `crane_(bird)` and
`crane_(machine)`, `maillot` and `maillot_(tank_suit)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transfer.models.registry import BACKBONES, BackboneSpec
from transfer.core.errors import InvalidOptionError

PREFIX = "imagenet:"
CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")


def is_imagenet(model: str | Path) -> bool:
    return str(model).startswith(PREFIX)


def class_names() -> list[str]:
    """The 1000 ImageNet class names, in the classifier's output order."""
    return [line.split(" ", 1)[1] for line in CLASSES_FILE.read_text().splitlines() if line]


def wordnet_ids() -> list[str]:
    return [line.split(" ", 1)[0] for line in CLASSES_FILE.read_text().splitlines() if line]


@dataclass(frozen=True)
class ImageNetClassifier:
    """`imagenet:NAME` as a model source, read like a run (`transfer.outputs.artifacts.Run`)."""

    spec: BackboneSpec
    weights: str = "imagenet"

    @classmethod
    def open(cls, model: str | Path, weights: str | None = None) -> ImageNetClassifier:
        """`model` is `imagenet:NAME`; `weights` `None` (Keras downloads them) or the path of the
        `include_top` weights file.

        Raises:
            InvalidOptionError: an unknown or non-ImageNet backbone, or a weights path that is not a file.
        """
        name = str(model)[len(PREFIX):]
        choices = [n for n, s in BACKBONES.items() if s.pretrained]
        if name not in choices:
            raise InvalidOptionError(
                f"{model}: the ImageNet classifiers are {', '.join(PREFIX + n for n in choices)}."
            )
        if weights is not None and not Path(weights).is_file():
            raise InvalidOptionError(f"--weights must be the path of a weights file; received {weights!r}, which is not a file.")
        return cls(BACKBONES[name], weights or "imagenet")

    @property
    def path(self) -> str:
        return PREFIX + self.spec.name

    def labels(self) -> list[str]:
        return class_names()

    def config(self) -> dict:
        """What a run's `config.json` would say, for evaluation and export."""
        return {
            "backbone": self.spec.name, "image_size": self.spec.input_size, "weights": self.weights,
            "imagenet_classifier": True, "flip": "horizontal",
        }

    def load_model(self):
        """The complete classifier: raw RGB pixels in [0, 255] in, 1000 probabilities out."""
        import keras

        from transfer.models.registry import load_application
        from transfer.data.preprocessing import Preprocess

        size = self.spec.input_size
        application = load_application(
            self.spec, include_top=True, weights=self.weights, input_shape=(size, size, 3)
        )
        inputs = keras.Input((size, size, 3), name="image")
        x = Preprocess(self.spec.preprocess_mode, dtype="float32", name="preprocess")(inputs)
        return keras.Model(inputs, application(x), name=f"imagenet_{self.spec.name}")
