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
        return keras.saving.load_model(model_file, compile=False)
    except Exception as error:
        reason = op_error_message(error)[:300] if zipfile.is_zipfile(model_file) else "not a complete .keras zip archive"
        raise ModelLoadError(
            f"Cannot load the model file {model_file} ({reason}). It is damaged or not "
            f"written by `transfer train`; train the run again."
        ) from error


def load_run_model(run):
    """The trained classifier of `run` (an `artifacts.Run`), for inference (the optimizer is not restored)."""
    return load_keras_model(run.model_file)
