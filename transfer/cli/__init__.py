"""The `transfer` command line: thin commands over the `transfer` library.

| module | holds |
|---|---|
| `app.py` | the Typer app, its global options, and the one error path: every error a user can cause becomes one `error:` line and an exit code (`user_errors`, Click's own parsing errors too) |
| `parameters.py` | the choice lists as Enums (from the library's own lists) and the training options that `train`, `lr-find`, `cross-validate`, `audit`, `compare` and `probe` share, made from their one declaration |
| `printers.py` | what goes to the terminal: progress on stderr, tables and results on stdout |
| `train.py` | the commands that train or fit: `train`, `lr-find`, `cross-validate`, `audit`, `compare`, `probe` |
| `use.py` | the commands that use a model: `predict`, `evaluate`, `report`, `visualize`, `features` |
| `deploy.py` | `export` and `serve` |
| `label.py` | `label`, `suggest` |
| `catalog.py` | `backbones` and `dataset` |

Each command gathers its options, calls one library function, and prints its result. Nothing here
imports TensorFlow: the library checks options and outputs first and imports it when the work
starts, so `--help`, `--version`, `backbones` and option errors answer at once.
"""

from transfer.cli import train, use, deploy, label, catalog  # noqa: F401,I001  (each registers its commands, in this order in --help)
from transfer.cli.app import app

__all__ = ["app"]
