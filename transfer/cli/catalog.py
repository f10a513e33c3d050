"""What `transfer` has built in: `backbones` (the registry) and `dataset` (datasets written offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transfer.cli.app import app, results, user_errors
from transfer.cli.parameters import DatasetName
from transfer.cli.printers import print_backbones


@app.command()
def backbones() -> None:
    """List the built-in backbones.

    Input size, parameters and pretrained weights file of each.

    Example: transfer backbones
    """
    with user_errors():
        from transfer.models.registry import describe_all

        rows = describe_all()
    print_backbones(rows)
    results.print("Any Keras model file (--backbone PATH.keras) or keras-hub preset (--backbone keras-hub:PRESET) works too; see the README.", highlight=False)


@app.command()
def dataset(
    name: Annotated[DatasetName, typer.Argument(help="Built-in dataset.")],
    out: Annotated[Path, typer.Argument(help="New or empty folder to write the class subfolders into (shapes-multi: images/ and the labels.csv manifest).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier dataset written by transfer (nothing else).")] = False,
) -> None:
    """Write a built-in dataset (no network needed).

    Writes the class subfolders of images into OUT (shapes-multi: images/ and a multi-label labels.csv).

    Example: transfer dataset digits data/digits
    """
    with user_errors():
        from transfer.datasets import write_dataset

        path = write_dataset(name.value, out, force=force)
    count = sum(1 for _ in Path(path).rglob("*.png"))
    results.print(f"{name.value}: {count} images in {path}", highlight=False)
    if (Path(path) / "labels.csv").is_file():
        results.print(f"Multi-label manifest: {Path(path) / 'labels.csv'} (transfer train --manifest {Path(path) / 'labels.csv'} ...)", highlight=False)
