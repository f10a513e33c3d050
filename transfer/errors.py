"""Errors a user can act on. The CLI prints their message (no traceback) and exits with `exit_code`."""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class TransferError(Exception):
    """Base class: something the user gave us cannot be used as it is.

    Attributes:
        exit_code: the command's exit code.
        label: the word the CLI puts before the message (`error`; `interrupted`, `stopped`).
    """

    exit_code = 1
    label = "error"


class InvalidOptionError(TransferError):
    """An option value is out of range or unknown."""

    exit_code = 2


class DataError(TransferError):
    """The image folder (or a file in it) cannot be used as a dataset."""

    exit_code = 2


class BadImageError(DataError):
    """One of several encoded images sent together cannot be decoded."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"image {index}: {reason}")
        self.index, self.reason = index, reason


class OutputExistsError(TransferError):
    """The output location holds something we would overwrite."""

    exit_code = 2


class OutputLocationError(TransferError):
    """The output location cannot be written: read-only, no permission, no space left."""


class WeightsUnavailableError(TransferError):
    """Pretrained weights could not be downloaded or loaded."""


class ModelLoadError(TransferError):
    """A run directory or an export is missing, incomplete or inconsistent."""


class NotAModelError(ModelLoadError):
    """A path that exists but is not what the command reads (not a run directory, not an export):
    bad input, like a missing one."""

    exit_code = 2


class TrainingInterrupted(TransferError):
    """Training was stopped by the user; the run can be resumed."""

    exit_code = 130
    label = "interrupted"


class Stopped(TransferError):
    """A long-running command (`serve`) was asked to stop (SIGTERM): 128 + 15, as the shell reports it."""

    exit_code = 143
    label = "stopped"


class DependencyMissingError(TransferError):
    """An optional part of transfer is not installed."""


class ExportCheckError(TransferError):
    """An export does not agree with the model it was made from."""


class ExportFailedError(TransferError):
    """A converter could not write the model in the format asked for."""


class ComparisonFailedError(TransferError):
    """Every backbone of a comparison failed."""


class ProbeFailedError(TransferError):
    """No candidate backbone of a probe (or of `--backbone auto`) could be loaded."""


class CrossValidationFailedError(TransferError):
    """Every fold of every backbone of a cross-validation failed."""


class WorkerLostError(TransferError):
    """Multi-worker training stopped because another worker died or became unreachable."""


def op_error_message(error: Exception) -> str:
    """A TensorFlow op error as one readable line, without the graph-function and op decorations."""
    text = (getattr(error, "message", None) or str(error)).strip()
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text.splitlines()[0] if text else "")
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip()
    return text or type(error).__name__


def require(condition: bool, option: str, received, allowed: str) -> None:
    """Raises `InvalidOptionError` naming `option`, the value received and what is allowed."""
    if not condition:
        raise InvalidOptionError(f"{option} must be {allowed}; received {received!r}.")


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Holds a Ctrl-C (SIGINT) that arrives inside the block until the block ends, then raises it.

    Around TensorFlow's calls this is what makes Ctrl-C work at all: a KeyboardInterrupt raised while
    the main thread waits in its C++ code (a `tf.data` iterator, a traced function) was lost more
    often than not (`transfer predict` over 12,000 images ran to the end 3 times in 5). Held here, it
    is raised in Python once the call returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
