import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TERMINAL_WIDTH", "200")  # Typer help on one line per option
# The feature cache of the tests' own runs stays out of the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="transfer-tests-cache-")
# One BLAS thread per process (and in the commands the tests start): the suite runs one process per
# core, and the many tiny NumPy / scikit-learn products (a logistic head's cross-validated fits on 30
# images) wait on a second OpenBLAS thread the other process holds: 5 to 10x slower than one thread.
# TensorFlow's own thread pools are not OpenBLAS and unaffected; the results are the same.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest

from tests.helpers import HYMENOPTERA


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    """The shared ants/bees photos (train/ and val/), read in place, never copied into the repo."""
    assert (HYMENOPTERA / "train" / "ants").is_dir(), f"expected the shared dataset at {HYMENOPTERA}"
    return HYMENOPTERA


@pytest.fixture
def offline_keras(tmp_path, monkeypatch) -> Path:
    """Keras with no network, as on this project's machines and any offline one: every download
    fails as `keras.utils.get_file` fails there, and Keras' cache is a fresh folder (returned)."""
    from keras.src.utils import file_utils

    def offline(fname, origin, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(file_utils, "get_file", offline)
    return home


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """60 images per digit from scikit-learn's bundled digits, written by the built-in recipe."""
    from transfer.datasets.digits import materialize

    return materialize(tmp_path_factory.mktemp("digits"), per_class=60)


@pytest.fixture(scope="session")
def digits_run(digits_dir, tmp_path_factory) -> Path:
    """LeNet-5 after 2 epochs on the generated digits: good (about 0.94), but with errors to show
    (cosine decay, pinned: at the default constant rate it reaches 1.0 and leaves no error)."""
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    out = tmp_path_factory.mktemp("digits-run") / "lenet"
    return train(digits_dir, out, TrainOptions(backbone="lenet", epochs=2, augment=False, seed=3, schedule="cosine"), verbose=0).run_dir


def pytest_collection_modifyitems(items):
    """Tests that read the shared photos (the `hymenoptera` fixture, directly or not) say so."""
    for item in items:
        if "hymenoptera" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def shapes_multi_dir(tmp_path_factory) -> Path:
    """160 images of zero to three shapes and their `labels.csv`, written by the built-in recipe."""
    from transfer.datasets.shapes_multi import materialize

    return materialize(tmp_path_factory.mktemp("shapes-multi"), images=160)


@pytest.fixture(scope="session")
def shapes_multi_run(shapes_multi_dir, tmp_path_factory) -> Path:
    """LeNet-5, multi-label, a few epochs on the shapes: sigmoids with thresholds chosen on validation."""
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    out = tmp_path_factory.mktemp("shapes-multi-run") / "lenet"
    options = TrainOptions(backbone="lenet", epochs=4, augment=False, seed=1, manifest=str(shapes_multi_dir / "labels.csv"))
    return train(None, out, options, verbose=0).run_dir
