"""How long the command line takes to answer what needs no model: `--help`, `backbones`, a bad option.

    .venv/bin/python benchmarks/startup.py

Runs each command 5 times as a new process (as a user would) and prints the median wall time, and,
for comparison, the time of `import tensorflow` alone in the same way.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "transfer --help": ["--help"],
    "transfer backbones": ["backbones"],
    "transfer train DATA --val-split 0 (bad option)": ["train", "data", "--out", "run", "--val-split", "0"],
    "transfer predict RUN x.jpg --top-k 0 (bad option)": ["predict", "run", "x.jpg", "--top-k", "0"],
}
REPEATS = 5


def median_seconds(argv: list[str], cwd: str) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as cwd:
        print(f"median of {REPEATS} runs, each a new process")
        for name, args in COMMANDS.items():
            print(f"  {name:52s} {median_seconds([sys.executable, '-m', 'transfer.cli', *args], cwd):5.2f} s")
        tensorflow = median_seconds([sys.executable, "-c", "import tensorflow"], cwd)
        label = 'python -c "import tensorflow" (for comparison)'
        print(f"  {label:52s} {tensorflow:5.2f} s")


if __name__ == "__main__":
    main()
