"""Labelling: `label` (a local page, the most useful photo first) and `suggest` (the photos to label next, for scripts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from transfer.cli.app import app, messages, results, user_errors
from transfer.cli.parameters import CacheDir
from transfer.cli.printers import RichReporter


@app.command()
def suggest(
    source: Annotated[Path, typer.Argument(metavar="RUN_OR_PROJECT", help="A run directory (its split.csv is what is labelled), or a labelling project folder (labels.csv and project.json).")],
    photos: Annotated[Path, typer.Argument(help="Folder of photos to choose from (searched recursively; those already labelled are left out).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write: path, suggested_label, confidence, reason.")] = Path("next.csv"),
    n: Annotated[int, typer.Option("--n", help="How many photos to suggest, most worth labelling first.")] = 20,
    strategy: Annotated[str, typer.Option(help="auto (representative while labels are few, then uncertain and not redundant) | typiclust | margin | random.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier suggestions file written by transfer (nothing else).")] = False,
    cache_dir: CacheDir = None,
) -> None:
    """Which photos to label next, and why.

    Writes the N photos of PHOTOS most worth labelling next, in order, with the model's suggested label.

    Example: transfer suggest runs/photos new_photos/ --n 20 --out next.csv
    """
    from transfer.selection.suggest import suggest as run_suggest

    with user_errors():
        found = run_suggest(source, photos, out, n=n, strategy=strategy, force=force,
                            cache_dir=Path(cache_dir) if cache_dir else None, reporter=RichReporter())
    for path, reason in found.skipped:
        messages.print(f"skipped {escape(str(path))}: {escape(reason)}", highlight=False)
    kinds = sorted({row["reason"].split(":")[0] for row in found.rows})
    already = f"; {found.already_labelled} already labelled, left out" if found.already_labelled else ""
    results.print(f"{len(found.rows)} photos to label next ({', '.join(kinds)}){already}: {escape(str(found.path))}", highlight=False)


@app.command()
def label(
    photos: Annotated[Path, typer.Argument(help="Folder of photos to label (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="PROJECT", help="The labelling project folder: created, or reopened to go on (labels.csv and project.json).")],
    classes: Annotated[Optional[str], typer.Option(help="The classes to start with, comma-separated (more can be added on the page).", show_default=False)] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="A path,label CSV whose labels a new project starts from.", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="What gives the photos' features: imagenet:NAME, a run directory or a Keras model file. Default: imagenet:efficientnet_lite0 (a new project; a project keeps its own).", show_default=False)] = None,
    audit: Annotated[Optional[Path], typer.Option(help="A folder `transfer audit` wrote: its doubted labels come first, to relabel or keep.", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Another than 127.0.0.1 exposes the photos and labels beyond this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8502,
    cache_dir: CacheDir = None,
) -> None:
    """Label photos on a page, most useful first.

    Shows the photos of PHOTOS one at a time, in the order most worth labelling, with the model's
    suggestion; keys 1-9 label, Enter accepts, u undoes, s skips. Every label is written to
    PROJECT/labels.csv at once; `transfer train --manifest PROJECT/labels.csv` trains on them.

    Example: transfer label photos/ --out project/ --classes ants,bees
    """
    from transfer.deploy.labelling import LabelOptions, label as run_label

    names = tuple(name.strip() for name in (classes or "").split(",") if name.strip())
    with user_errors():
        run_label(photos, out, LabelOptions(classes=names, manifest=manifest, model=model, audit=audit, host=host, port=port,
                                            cache_dir=Path(cache_dir) if cache_dir else None), reporter=RichReporter())
