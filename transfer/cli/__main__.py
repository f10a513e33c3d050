"""`python -m transfer.cli`: the same app as the `transfer` command."""

from transfer.cli import app

app()
