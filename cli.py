"""Runs the command line from a checkout without installing it: `python cli.py --help`.

Installed, the same Typer app is the `transfer` command (`transfer.cli:app`); it lives inside the
package so that installing adds one importable name, `transfer` (see the README's "How it is built").
"""

from transfer.cli import app

if __name__ == "__main__":
    app()
