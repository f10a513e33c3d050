"""What every benchmark shares: where the project and the shared data are, the machine a number was
measured on, and how a mean over seeds is shown.

Each benchmark is a script (`.venv/bin/python benchmarks/NAME.py`); this module sits beside them and
puts the project's root on the import path, so `import transfer` reads this checkout.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
#: `../shared/data` beside the checkout: real photos and a real pretrained backbone (never copied in).
SHARED = ROOT.parent / "shared" / "data"
HYMENOPTERA = SHARED / "hymenoptera"
LITE0 = SHARED / "efficientnet_lite0" / "efficientnet_lite0_notop.keras"
#: The vector extensions that decide CPU speeds (float32 through AVX2/FMA, int8 through VNNI).
VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")


def machine() -> str:
    """`2 cores, AMD EPYC (avx2 fma avx512f avx512_vnni), Python 3.11.7`: what a timing ran on."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and model == (platform.processor() or "unknown CPU"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    extensions = " ".join(name for name in VECTOR_EXTENSIONS if name in flags) or "no AVX2"
    return f"{os.cpu_count()} cores, {model} ({extensions}), Python {platform.python_version()}"


def mean_sd(values, digits: int = 3) -> str:
    """`0.897 +- 0.071`: the mean and the sample standard deviation (0 for a single value)."""
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {sd:.{digits}f}"


def cli(*args) -> None:
    """`transfer ARGS...` in this process (the installed Typer app, without its start-up); raises
    on a non-zero exit."""
    from transfer.cli import app

    try:
        app([str(a) for a in args], standalone_mode=False)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise RuntimeError(f"transfer {' '.join(map(str, args))} exited with {exit_.code}") from None
