"""Backbones that are not in the registry: a Keras model file, or a keras-hub preset.

`--backbone PATH.keras` takes any Keras 3 model file whose model reads RGB images and returns
either a feature map `[N, H, W, C]` or a feature vector `[N, C]`:

- Its input size comes from the file; a model that takes any size uses `--image-size` (224 when
  not given). A file that takes one size refuses any other with one line.
- A file that ends in a classifier (a `Dense` layer with a softmax, optionally behind `Dropout`)
  is cut below it, and the run says so. A global average pooling at the end (under the classifier
  or not) is cut too, so that the backbone's feature maps reach the classifier's own `avg_pool`
  (the same numbers, and Grad-CAM has a map to look at). `--backbone-layer NAME` takes the
  features of any other layer.
- Preprocessing is inside the model by default (it reads raw RGB in [0, 255], as the shared
  EfficientNet-Lite0 does), or a `keras.applications` mode by `--preprocess caffe|tf|torch`.
- The file is loaded in Keras' safe mode: a `Lambda` layer (arbitrary Python) is refused.

`--backbone keras-hub:PRESET` loads `keras_hub.models.Backbone.from_preset(PRESET)` (a preset name
from the hub, or a local preset folder) with its own `ImageConverter`'s scale and offset as the
preprocessing. Both kinds become a plain functional model named `backbone` inside the classifier,
so a trained run is self-contained: its `model.keras` holds every layer and weight, and the file
or preset is not read again.

Reading the file's description (`inspect_file`) needs no TensorFlow: a `.keras` file is a zip
archive with the model's `config.json`, so options are checked before anything heavy is imported.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from transfer.core.errors import DependencyMissingError, InvalidOptionError, ModelLoadError, WeightsUnavailableError

FILE_SUFFIX = ".keras"
HUB_PREFIX = "keras-hub:"
#: The name of a file's or preset's backbone inside the classifier (the registry's use their own).
LAYER_NAME = "backbone"
#: The default side for a model that takes any size.
DEFAULT_SIZE = 224
#: The smallest side offered to a model that takes any size (most CNNs downsample 32 times).
MIN_SIZE = 32
#: `--pooling` of a backbone that returns tokens `[N, T, C]`: `cls`, its class token (the first);
#: `mean`, the mean of its patch tokens (class and register tokens left out); `auto`, `cls` where the
#: backbone has a class token (ViT, DINOv2) and `mean` where it has none (SigLIP's image tower).
POOLINGS = ("auto", "cls", "mean")


def is_external(name: str) -> bool:
    """Whether `--backbone name` names a model file or a keras-hub preset rather than a registry entry:
    a `keras-hub:` prefix, or anything that looks like a path (a suffix, a folder, an existing file)."""
    return name.startswith(HUB_PREFIX) or bool(Path(name).suffix) or os.sep in name or os.path.exists(name)


def display_name(name: str) -> str:
    """A short name for folders and tables: the file's stem, or the preset's last part."""
    if name.startswith(HUB_PREFIX):
        return "hub-" + Path(name[len(HUB_PREFIX):].rstrip("/")).name
    return Path(name).stem


@dataclass(frozen=True)
class FileInfo:
    """What a `.keras` file says about its model, read without TensorFlow.

    Attributes:
        size: the input's fixed square side, or `None` when the model takes any size.
        output_class: the class name of the layer that produces the model's output.
        note: what the run says when it starts: that the file ends in a classifier, which is cut.
    """

    size: int | None
    note: str = ""


def inspect_file(path: str) -> FileInfo:
    """Reads a Keras model file's description.

    Raises:
        InvalidOptionError: the path does not exist, or is not a Keras 3 model file of a model that
            reads one RGB image.
    """
    file = Path(path)
    if not file.exists():
        raise InvalidOptionError(
            f"--backbone {path}: no such file. Expected a registry name or the path of a Keras model file (.keras)."
        )
    if file.is_dir() or file.suffix.lower() != FILE_SUFFIX:
        raise InvalidOptionError(
            f"--backbone {path} is not a Keras model file; expected a .keras file written by model.save(), "
            f"or a registry name (see `transfer backbones`)."
        )
    try:
        with zipfile.ZipFile(file) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise InvalidOptionError(
            f"--backbone {path} is not a Keras 3 model file ({type(error).__name__}: {error}); expected a .keras "
            f"archive written by model.save('NAME.keras')."
        ) from None
    inner = config.get("config", {}) if isinstance(config, dict) else {}
    layers = inner.get("layers") or []
    if not layers:
        raise InvalidOptionError(
            f"--backbone {path} holds a {config.get('class_name', 'model')} without a layer graph; expected a "
            f"functional or Sequential Keras model."
        )
    first = layers[0].get("config", {})
    shape = first.get("batch_shape") or first.get("batch_input_shape") or inner.get("build_input_shape")
    if not shape or len(shape) != 4 or shape[-1] != 3:
        raise InvalidOptionError(
            f"--backbone {path}: the model's input has shape {shape}; expected images, (batch, height, width, 3) RGB."
        )
    height, width = shape[1], shape[2]
    if height != width:
        raise InvalidOptionError(
            f"--backbone {path} takes {height}x{width} images; transfer feeds square images. Save the model with a "
            f"square input, or with (None, None, 3) to take any size."
        )
    last = layers[-1]
    softmax = last.get("class_name") == "Softmax" or (
        last.get("class_name") in ("Dense", "Activation") and last.get("config", {}).get("activation") == "softmax"
    )
    note = (
        f"{path} ends in a classifier (a softmax, layer {last.get('name')!r}); the features are taken below it "
        f"and the pooling under it. --backbone-layer NAME takes another layer's output."
    ) if softmax else ""
    return FileInfo(size=height, note=note)


def check_hub(name: str) -> str:
    """The preset of `keras-hub:PRESET`, once keras-hub is known to be installed.

    Raises:
        InvalidOptionError: no preset named.
        DependencyMissingError: keras-hub is not installed.
    """
    preset = name[len(HUB_PREFIX):]
    if not preset:
        raise InvalidOptionError(
            "--backbone keras-hub: names no preset; expected keras-hub:PRESET (a preset name such as "
            "efficientnet_lite0_ra_imagenet, or the path of a local preset folder)."
        )
    looks_like_folder = preset.startswith((".", "/", "~")) or os.sep in preset and not preset.startswith(("kaggle://", "hf://"))
    if looks_like_folder and not Path(preset).expanduser().is_dir():
        raise InvalidOptionError(
            f"--backbone {name}: no preset folder {preset}. Expected a keras-hub preset name or the path of a preset folder "
            f"(written by save_to_preset)."
        )
    import importlib.util

    if importlib.util.find_spec("keras_hub") is None:
        raise DependencyMissingError(
            f"--backbone {name} needs keras-hub, from an optional part of transfer: pip install 'keras-transfer[hub]'."
        )
    return preset


def hub_image_size(preset: str) -> int | None:
    """The square side a local preset folder's image converter resizes to, or `None` (a preset of the
    hub, whose files are not here before it is loaded, or a converter of any size)."""
    try:
        config = json.loads((Path(preset) / "image_converter.json").read_text())["config"]
        height, width = config["image_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(height) if height == width and height else None


def sha256_of(name: str) -> str | None:
    """The SHA-256 of a model file, or of a local preset folder's files; `None` for a hub preset name."""
    from transfer.outputs.publishing import sha256

    if name.startswith(HUB_PREFIX):
        folder = Path(name[len(HUB_PREFIX):])
        if not folder.is_dir():
            return None
        import hashlib

        digest = hashlib.sha256()
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(folder)).encode() + sha256(file).encode())
        return digest.hexdigest()
    return sha256(name)


# Loading: TensorFlow and Keras from here on.


def load_file_backbone(path: str, layer: str | None = None, pooling: str = "auto"):
    """The feature extractor of a Keras model file: a functional model named `backbone` from RGB
    images to a feature map (a vector becomes a 1x1 map), cut below a final classifier.

    Raises:
        ModelLoadError: the file does not load in safe mode, or its output is not image features.
    """
    import keras

    try:
        from transfer.models.saving import repaired_layers

        loaded = keras.saving.load_model(path, compile=False, safe_mode=True, custom_objects=repaired_layers(Path(path)))
    except Exception as error:  # Keras raises ValueError, TypeError or its own for a model it cannot rebuild
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "Lambda" in str(error) or "safe_mode" in str(error):
            raise ModelLoadError(
                f"--backbone {path} holds a Lambda layer (arbitrary Python code), which Keras' safe mode refuses "
                f"to load. Replace it with a standard or registered layer and save the model again."
            ) from None
        raise ModelLoadError(f"--backbone {path} could not be loaded as a Keras model: {text[:300]}") from None
    if not hasattr(loaded, "inputs") or not loaded.inputs or len(loaded.inputs) != 1:
        raise ModelLoadError(f"--backbone {path}: expected a functional or Sequential model with one image input.")
    return _features_of(loaded, path, layer, _TokenLayout(pooling, prefix=0, class_token=False))


@dataclass(frozen=True)
class _TokenLayout:
    """How to pool a backbone's tokens: `pooling` (one of `POOLINGS`), the `prefix` tokens before the
    patch tokens (class and register tokens), and whether the first is a class token."""

    pooling: str
    prefix: int
    class_token: bool

    @classmethod
    def of(cls, hub_backbone, pooling: str) -> _TokenLayout:
        """ViT has a class token where `use_class_token`; DINOv2 one, then `num_register_tokens`."""
        class_token = bool(getattr(hub_backbone, "use_class_token", type(hub_backbone).__name__.startswith("DINOV")))
        return cls(pooling, int(class_token) + int(getattr(hub_backbone, "num_register_tokens", 0) or 0), class_token)


def _pool_tokens(output, name: str, layout: _TokenLayout):
    """The `[N, C]` pooled feature of tokens `[N, T, C]`, in Keras' own layers (safe mode loads them)."""
    import keras

    pooling = layout.pooling if layout.pooling != "auto" else "cls" if layout.class_token else "mean"
    tokens = output.shape[1]
    if pooling == "cls":
        if tokens is None:
            raise ModelLoadError(f"--backbone {name} returns a token sequence of unknown length; --pooling cls needs a fixed input size.")
        first = keras.layers.Cropping1D((0, tokens - 1), name="class_token")(output)
        return keras.layers.Flatten(name="token_pool")(first)
    patches = keras.layers.Cropping1D((layout.prefix, 0), name="patch_tokens")(output) if layout.prefix else output
    return keras.layers.GlobalAveragePooling1D(name="token_pool")(patches)


def _features_of(loaded, name: str, layer: str | None, layout: _TokenLayout):
    import keras

    if layer is not None:
        try:
            output = loaded.get_layer(layer).output
        except ValueError:
            raise ModelLoadError(
                f"--backbone-layer {layer} is not a layer of {name}; its last layers are: "
                f"{', '.join(l.name for l in loaded.layers[-8:])}."
            ) from None
    else:
        output = _below_classifier(loaded)
    rank = len(output.shape)
    if layout.pooling != "auto" and rank != 3:
        raise ModelLoadError(
            f"--pooling {layout.pooling} pools a token sequence (batch, tokens, channels); {name} returns features of shape "
            f"{tuple(output.shape)}, pooled by the classifier itself. Drop --pooling."
        )
    if rank == 3 and (layout.pooling != "auto" or name.startswith(HUB_PREFIX)):
        output = _pool_tokens(output, name, layout)
        rank = 2
    if rank not in (2, 4):
        advice = (
            "A token sequence is pooled by --pooling cls (its first token) or --pooling mean; or choose a layer with "
            "--backbone-layer NAME." if rank == 3 else "Choose a layer that gives one with --backbone-layer NAME."
        )
        raise ModelLoadError(
            f"--backbone {name}: the features have shape {tuple(output.shape)}; expected a feature map (batch, height, "
            f"width, channels) or a vector (batch, channels). {advice}"
        )
    if rank == 2:
        output = keras.layers.Reshape((1, 1, output.shape[-1]), name="features_as_map")(output)
    return keras.Model(loaded.inputs, output, name=LAYER_NAME)


def _below_classifier(model):
    """The output of `model` below a final softmax classifier (a `Dense` softmax, or a `Dense`
    under a `Softmax`/`Activation("softmax")`, with any `Dropout` under it), then below a global
    average pooling (the classifier's own `avg_pool` pools the map the same way)."""
    import keras

    def producer(tensor):
        return tensor._keras_history.operation

    def is_softmax(layer):
        return layer.get_config().get("activation") == "softmax"

    output = model.outputs[0]
    softmax = isinstance(producer(output), keras.layers.Softmax) or (
        isinstance(producer(output), keras.layers.Activation) and is_softmax(producer(output))
    )
    if softmax:
        output = producer(output).input
    if isinstance(producer(output), keras.layers.Dense) and (softmax or is_softmax(producer(output))):
        output = producer(output).input
        while isinstance(producer(output), keras.layers.Dropout):
            output = producer(output).input
    pool = producer(output)
    if isinstance(pool, keras.layers.GlobalAveragePooling2D) and not pool.get_config().get("keepdims"):
        output = pool.input
    return output


def load_hub_backbone(name: str, pooling: str = "auto"):
    """The backbone of keras-hub preset `name` (`keras-hub:PRESET`) as a plain functional model named
    `backbone`, and its image converter's per-channel scale and offset. A backbone that returns tokens
    (ViT, DINOv2, SigLIP's image tower) has them pooled by `pooling` (`POOLINGS`) into one feature.

    Raises:
        WeightsUnavailableError: the preset cannot be loaded (offline, a wrong name or folder).
        ModelLoadError: the backbone's output is not image features.
    """
    import keras
    import keras_hub

    preset = name[len(HUB_PREFIX):]
    try:
        hub_backbone = keras_hub.models.Backbone.from_preset(preset)
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception as error:  # keras-hub raises many kinds for a missing file, a refused download, a bad name
        text = " ".join(str(error).split()) or type(error).__name__
        if "preset must be" in text:  # keras-hub's answer to a name it does not know, before any download
            raise InvalidOptionError(
                f"--backbone {name}: keras-hub knows no preset {preset!r}. Use one of keras_hub.models.Backbone.presets "
                f"(e.g. efficientnet_lite0_ra_imagenet), a kaggle:// or hf:// handle, or a local preset folder."
            ) from None
        raise WeightsUnavailableError(
            f"Could not load keras-hub preset {preset!r}: {text[:300]}\nkeras-hub downloads presets from Kaggle or "
            f"Hugging Face. Fix: on a machine with internet access run `python -c \"import keras_hub as h; "
            f"h.models.Backbone.from_preset('{preset}').save_to_preset('DIR'); "
            f"h.layers.ImageConverter.from_preset('{preset}').save_to_preset('DIR')\"`, copy DIR here and pass "
            f"--backbone keras-hub:DIR."
        ) from None
    scale, offset = _converter_affine(converter)
    tower = getattr(hub_backbone, "vision_encoder", None)  # an image-text pair (SigLIP): its image tower
    if tower is not None:
        return _features_of(_image_tower(tower, name, pooling), name, None, _TokenLayout(pooling, 0, False)), scale, offset
    loaded = keras.Model(hub_backbone.inputs, hub_backbone.outputs, name="hub")
    return _features_of(loaded, name, None, _TokenLayout.of(hub_backbone, pooling)), scale, offset


def _image_tower(tower, name: str, pooling: str):
    """SigLIP's image tower: pooled by its own attention-pooling head (`auto`, as it was trained), or
    the mean of its normalised patch tokens (`mean`); it has no class token."""
    import keras

    if pooling == "auto":
        return keras.Model(tower.inputs, tower.outputs, name="hub")
    if pooling == "cls":
        raise ModelLoadError(
            f"--pooling cls takes a class token; the image tower of {name} has none. Use --pooling auto (its "
            f"attention-pooling head) or --pooling mean."
        )
    norm = next(layer for layer in tower.layers if layer.name.endswith("post_layer_norm"))
    return keras.Model(tower.inputs, norm.output, name="hub")


def _converter_affine(converter) -> tuple[list[float], list[float]]:
    """The converter's `x * scale + offset`, as three numbers each (its `None` means 1 and 0)."""
    import numpy as np

    def three(value, default):
        value = np.broadcast_to(np.asarray(default if value is None else value, dtype="float64").reshape(-1), (3,))
        return [float(v) for v in value]

    return three(converter.scale, 1.0), three(converter.offset, 0.0)
