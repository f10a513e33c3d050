"""The skeleton of an experiment that trains or fits many times (`compare`, `cross_validation`, `audit`,
`probe`), written once.

In order: every backbone's options are checked (`check_backbones`), then `preflight` checks the output's
place and lists the images, all before any image is read; the data is prepared once (`prepare_data`:
every image decoded, the unusable ones reported); the output is written in a staging folder
(`staged`) published only when every part has had its turn, where a Ctrl-C during training becomes
one message saying that nothing was written; and a table whose every row failed is an error of the
command's own class, with the reasons (`require_some_success`).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd

from transfer.core.errors import TrainingInterrupted, TransferError
from transfer.core.progress import SILENT, Reporter
from transfer.data.sources import Listing
from transfer.models.registry import check_backbone_list
from transfer.outputs import layout, publishing
from transfer.training.options import TrainOptions
from transfer.training.preflight import preflight

#: The size images are decoded at when checked: enough to know each one can be read.
CHECK_SIZE = 32


@dataclass(frozen=True)
class Experiment:
    """One experiment's output (`kind`: the word its output and messages use, e.g. "comparison") at
    `out_dir`, with the `options` every part starts from.

    Attributes:
        discarded: what an interruption discards besides the output ("the unfinished runs"), or "".
        again: the interrupted message's last sentence: what running the command again gives.
    """

    kind: str
    out_dir: Path
    options: TrainOptions
    force: bool = False
    reporter: Reporter = SILENT
    discarded: str = ""
    again: str = "Run the command again."

    def check_backbones(self, backbones: Sequence[str], manifest: Path | str) -> None:
        """Checks the list of `backbones` and the options each one would train with, reading its
        images from `manifest` (a placeholder: nothing is read), before any image is read.

        Raises:
            InvalidOptionError: an unknown or repeated backbone, or an option one of them refuses.
        """
        check_backbone_list(list(backbones))
        for name in backbones:
            self.options.for_backbone(name, Path(manifest)).resolved()

    def preflight(self, data_dir: Path | None) -> Listing:
        """The images of `data_dir` (or the options' manifest), listed but not read, once the
        output's place and the optional parts the options need are checked (`preflight`)."""
        return preflight(data_dir, Path(self.out_dir), self.options, kind=self.kind, force=self.force)

    def prepare_data(self, data: Path | None | Listing, *, forget_split: bool = False,
                     listed_in: str | None = layout.SKIPPED):
        """The `ImageFolder` of `data` (a folder, preflighted first, or a `Listing`): see `prepare_listing`."""
        listing = data if isinstance(data, Listing) else self.preflight(data)
        return prepare_listing(listing, self.options, self.reporter, forget_split=forget_split, listed_in=listed_in)

    @contextmanager
    def staged(self) -> Iterator[Path]:
        """The staging folder of the output, published when the block succeeds; when training in it
        is interrupted, it is removed and the interruption says that nothing was written."""
        try:
            with publishing.staged(Path(self.out_dir), self.kind) as staging:
                yield staging
        except TrainingInterrupted:
            raise TrainingInterrupted(self.interrupted_message()) from None

    def interrupted_message(self) -> str:
        discarded = f", and {self.discarded} were discarded" if self.discarded else ""
        return (f"{self.kind.capitalize()} interrupted: nothing was written to {self.out_dir} (an earlier {self.kind} "
                f"there is unchanged){discarded}. {self.again}")


def prepare_listing(listing: Listing, options: TrainOptions, reporter: Reporter = SILENT, *, forget_split: bool = False,
                    listed_in: str | None = layout.SKIPPED):
    """`listing` prepared once (`transfer.data.folders.prepare`: every image decoded, split with the
    options' `val_split` and `seed`), the files that will not be used reported (`listed_in`: the
    output's file that lists them, or None). `forget_split`: a split the listing fixes is not used
    (the experiment makes its own folds)."""
    from transfer.data.folders import prepare, report_skipped

    if forget_split:
        listing = dataclasses.replace(listing, files=listing.files.assign(split=""))
    folder = prepare(listing, image_size=CHECK_SIZE, val_split=options.val_split, seed=options.seed, reporter=reporter)
    report_skipped(folder.skipped, reporter, listed_in=listed_in)
    return folder


def require_some_success(rows: pd.DataFrame, error_class: type[TransferError], failed: str, advice: str, *,
                         reasons: Callable[[pd.DataFrame], list[str]] | None = None) -> None:
    """Raises `error_class`: "`failed` (the reasons). `advice`" when no row of `rows` (one per part,
    an `error` column that is blank where it succeeded) succeeded. The reasons are each row's
    "backbone: error", or what `reasons` gives; each without its closing full stop."""
    if rows["error"].astype(bool).all():
        said = reasons(rows) if reasons else [f"{row.backbone}: {row.error}" for row in rows.itertuples()]
        raise error_class(f"{failed} ({'; '.join(reason.rstrip('.') for reason in said)}). {advice}")
