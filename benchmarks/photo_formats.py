"""HEIC and AVIF photos against the same photos as JPEG: decoding time per image and pixel difference.

The first N hymenoptera training photos (ants then bees) are re-encoded by Pillow as JPEG, HEIC
(pillow-heif) and AVIF at quality 90 into a temporary folder, then decoded at 224 px by the training
pipeline's decoder (`transfer.data.folders.iter_decoded_batches`: JPEG in the graph; HEIC and AVIF made
PNG by Pillow first). Reported: seconds per image (mean +- sd over repeats, after one warm-up pass)
and the mean absolute pixel difference from the JPEG's decode (codec error; 0-255 scale).

    .venv/bin/python benchmarks/photo_formats.py [--images 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common import HYMENOPTERA, machine, mean_sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pillow_heif
    from PIL import Image

    from transfer.data.folders import iter_decoded_batches

    pillow_heif.register_heif_opener()
    sources = sorted((HYMENOPTERA / "train" / "ants").iterdir()) + sorted((HYMENOPTERA / "train" / "bees").iterdir())
    sources = sources[: args.images]
    print(f"{len(sources)} hymenoptera photos, decoded at 224 px; {machine()}")
    print("| format | bytes / image | seconds / image | mean abs pixel difference from JPEG |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        decoded = {}
        for fmt, suffix in (("JPEG", "jpg"), ("HEIF", "heic"), ("AVIF", "avif")):
            paths = []
            for i, source in enumerate(sources):
                path = Path(folder) / f"{i}.{suffix}"
                Image.open(source).convert("RGB").save(path, format=fmt, quality=90)
                paths.append(str(path))

            def decode():
                return np.concatenate([batch.pixels for batch in iter_decoded_batches(paths, 224, 16)])

            decoded[fmt] = decode()  # warm-up, and the pixels compared
            assert len(decoded[fmt]) == len(paths), f"{fmt}: some images did not decode"
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                decode()
                seconds.append((time.perf_counter() - start) / len(paths))
            size = np.mean([Path(p).stat().st_size for p in paths])
            difference = np.abs(decoded[fmt] - decoded["JPEG"]).mean()
            print(f"| {suffix} | {size:,.0f} | {mean_sd(seconds, 4)} | {difference:.2f} |")


if __name__ == "__main__":
    main()
