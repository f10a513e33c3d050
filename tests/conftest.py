import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TERMINAL_WIDTH", "200")  # Typer help on one line per option

import pytest

ROOT = Path(__file__).resolve().parents[1]
HYMENOPTERA = ROOT.parent / "shared" / "data" / "hymenoptera"


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    """The shared ants/bees photos (train/ and val/), read in place, never copied into the repo."""
    assert (HYMENOPTERA / "train" / "ants").is_dir(), f"expected the shared dataset at {HYMENOPTERA}"
    return HYMENOPTERA


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """60 images per digit from scikit-learn's bundled digits, written by the built-in recipe."""
    from datasets.digits import materialize

    return materialize(tmp_path_factory.mktemp("digits"), per_class=60)


def few_photos(source: Path, destination: Path, per_class: int) -> Path:
    """Symlinks the first `per_class` photos of each class of `source` into `destination`."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        (destination / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.iterdir())[:per_class]:
            (destination / class_dir.name / photo.name).symlink_to(photo)
    return destination
