"""transfer: fine-tune ImageNet backbones (or train LeNet-5 / AlexNet baselines) on a folder of images.

The package imports TensorFlow lazily: `transfer.models.registry`, `transfer.training.options` and
`transfer.core.errors` are cheap, so the command line answers `--help` at once; the modules that build
or run models import Keras themselves.

In your own Keras code, `transfer.load_model("runs/photos")` loads a run's `model.keras` (its first
layer, `Preprocess`, is this package's): it takes raw RGB pixels in [0, 255] at the run's input size
and returns the softmax in `labels.txt` order.
"""

from __future__ import annotations

from pathlib import Path

from transfer.core.version import __version__

__all__ = ["__version__", "load_model"]


def load_model(path: str | Path):
    """A trained classifier, from a run directory or a `.keras` file written by `transfer train`.

    Args:
        path: the run directory (its `model.keras`), or the path of a `.keras` file.

    Returns:
        An uncompiled `keras.Model` for inference: images `[N, size, size, 3]` of raw pixels in
        [0, 255] in, class probabilities out, in the order of the run's `labels.txt`.

    Raises:
        ModelLoadError: no model there, or a damaged one.
    """
    from transfer.models.saving import load_keras_model
    from transfer.outputs.artifacts import Run

    path = Path(path)
    return load_keras_model(Run.open(path).model_file if path.is_dir() else path)
