"""What several test modules need: the project's paths and small image folders written on the spot."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from transfer.core.progress import Reporter

ROOT = Path(__file__).resolve().parents[1]
HYMENOPTERA = ROOT.parent / "shared" / "data" / "hymenoptera"


def write_image(path: Path, mode="RGB", size=(20, 16), color=(200, 30, 30), fmt=None) -> Path:
    """One flat-colour image of `mode` (RGB, L, P, RGBA, CMYK...) in `fmt` (from the suffix when None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def write_png(path: Path, color=(200, 30, 30), size=(40, 40)) -> Path:
    return write_image(path, size=size, color=color, fmt="PNG")


def image_folder(root: Path, classes=("ants", "bees"), per_class=6) -> Path:
    """Tiny distinct PNGs, `per_class` per class."""
    for i, name in enumerate(classes):
        for j in range(per_class):
            write_png(root / name / f"{j}.png", color=(120 * i, 20 * j, 90))
    return root


def make_folder(root: Path, classes=("b_class", "a_class"), per_class=5) -> Path:
    """Tiny distinct PNGs in class folders named out of sorted order."""
    for i, name in enumerate(classes):
        for j in range(per_class):
            write_image(root / name / f"{j}.png", color=(40 * i, 10 * j, 100))
    return root


def few_photos(source: Path, destination: Path, per_class: int) -> Path:
    """Symlinks the first `per_class` photos of each class of `source` into `destination`."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        (destination / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.iterdir())[:per_class]:
            (destination / class_dir.name / photo.name).symlink_to(photo)
    return destination


def blocks(width=48, height=32) -> Image.Image:
    """An image whose four quadrants differ, so any flip or rotation shows."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (250, 20, 20)
    pixels[: height // 2, width // 2 :] = (20, 250, 20)
    pixels[height // 2 :, : width // 2] = (20, 20, 250)
    pixels[height // 2 :, width // 2 :] = (240, 240, 30)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def wait_for_epoch(process: subprocess.Popen, backup: Path, epoch: int, timeout: float = 180) -> int:
    """Waits until the stage's BackupAndRestore record says `epoch` epochs are complete."""
    record = backup / "training_metadata.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            done = json.loads(record.read_text())["epoch"]
        except (OSError, ValueError):
            done = 0
        if done >= epoch:
            return done
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"no backup of epoch {epoch} within {timeout} s")


@contextmanager
def headless_chromium(window: str = "1200,900") -> Iterator:
    """A Selenium driver of Debian's chromium, headless, quit when the block ends."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "needs Debian's chromium and chromium-driver (`make test` installs them)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={window}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def assert_picture(path: Path, min_width: int = 300, min_height: int = 200) -> None:
    """`path` is a PNG that decodes, at least `min_width` x `min_height`, and shows something: not one
    flat colour (a figure drawn with no data is mostly background, with no spread of pixel values)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is {image.format}, not PNG"
        pixels = np.asarray(image.convert("RGB"), np.float64)
    assert pixels.shape[1] >= min_width and pixels.shape[0] >= min_height, f"{path} is only {pixels.shape[1]}x{pixels.shape[0]}"
    assert pixels.std() > 10 and (pixels.min(axis=2) < 128).mean() > 0.01, f"{path} is (nearly) blank"


class RecordingReporter(Reporter):
    """The bars opened (description, total, steps advanced) and the messages."""

    def __init__(self):
        self.bars, self.lines = [], []

    def message(self, text):
        self.lines.append(text)

    @contextmanager
    def progress(self, description, total):
        bar = {"description": description, "total": total, "done": 0}
        self.bars.append(bar)

        class Advance:
            def advance(self, amount=1):
                bar["done"] += amount

        yield Advance()
