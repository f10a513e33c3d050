"""Reading a classifier that `transfer train` wrote: Keras' own loader, with this package's layers
(`Preprocess`, `Temperature`) registered first and a clear error for a damaged file."""

from __future__ import annotations

import zipfile
from pathlib import Path

from transfer.core.errors import ModelLoadError, op_error_message


def load_keras_model(model_file: Path):
    """A `model.keras` written by `transfer train`, for inference, with a clear error if damaged."""
    import keras

    import transfer.models.heads  # noqa: F401  (registers the Temperature layer)
    import transfer.data.preprocessing  # noqa: F401  (registers the in-model Preprocess layer)

    model_file = Path(model_file)
    try:
        return keras.saving.load_model(model_file, compile=False, custom_objects=repaired_layers(model_file))
    except Exception as error:
        reason = op_error_message(error)[:300] if zipfile.is_zipfile(model_file) else "not a complete .keras zip archive"
        raise ModelLoadError(
            f"Cannot load the model file {model_file} ({reason}). It is damaged or not "
            f"written by `transfer train`; train the run again."
        ) from error


def load_run_model(run):
    """The trained classifier of `run` (an `artifacts.Run`), for inference (the optimizer is not restored)."""
    return load_keras_model(run.model_file)


def repaired_layers(model_file: Path) -> dict:
    """Replacements for third-party layers that do not load from their own saved configuration.

    keras-hub's `ViTPatchingAndEmbedding` (0.32 and earlier) writes `num_patches` and `num_positions`,
    which it computes from its other arguments and refuses when given back: a ViT run would train
    and then fail to load. Its replacement drops the two before building the same layer. Looked for
    in the file's configuration first, so other models do not import keras-hub."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            if b"ViTPatchingAndEmbedding" not in archive.read("config.json"):
                return {}
    except (OSError, KeyError, zipfile.BadZipFile):
        return {}  # the loader says what is wrong with the file
    from keras_hub.src.models.vit.vit_layers import ViTPatchingAndEmbedding

    class Repaired(ViTPatchingAndEmbedding):
        @classmethod
        def from_config(cls, config):
            config = {key: value for key, value in config.items() if key not in ("num_patches", "num_positions")}
            return cls(**config)

    Repaired.__name__ = "ViTPatchingAndEmbedding"  # Keras files a layer's weights under its class's name
    return {"ViTPatchingAndEmbedding": Repaired}


def run_transfers(config: dict) -> bool:
    """Whether a run (its `config.json`) is a backbone under a new head, not a baseline from scratch
    (`transfers`; runs before it say `pretrained`)."""
    return bool(config.get("transfers", config.get("pretrained")))
