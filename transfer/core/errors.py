"""Errors a user can act on. The CLI prints their message (no traceback) and exits with `exit_code`."""

from __future__ import annotations

import atexit
import os
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
    if _stop.active:  # no Ctrl-C is raised under `stop_at_safe_points`; a second one waits for the block
        _stop.critical += 1
        try:
            yield
        finally:
            _stop.critical -= 1
        if _stop.exit_pending and not _stop.critical:
            _stop_at_once()
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class _Stop:
    """Where `stop_at_safe_points` stands: whether its handler is installed, and whether Ctrl-C came."""

    active = False
    requested = False
    critical = 0  # `sigint_deferred` blocks in progress (a backup or checkpoint being written)
    exit_pending = False


_stop = _Stop()


@contextmanager
def stop_at_safe_points() -> Iterator[None]:
    """Turns a Ctrl-C (SIGINT) inside the block into a request that `raise_if_stop_requested` raises
    as a KeyboardInterrupt at the next safe point (a batch's end, in Python), or as the block ends; a
    second Ctrl-C ends the process with 130 without waiting for one.

    Raised by the signal handler, a KeyboardInterrupt lands wherever the main thread is: inside
    TensorFlow's C++ code, where Python turns it into another exception (`SystemError: <built-in
    function __import__> returned a result with an exception set`), or inside a `__del__`, where it
    is printed and dropped, and training ran on and published the run. Here the handler only
    records the request; what raises is ordinary Python code between two batches. A second Ctrl-C
    waits only for a backup or checkpoint being written (`sigint_deferred`), then exits with 130;
    `--resume` goes on from the last completed epoch."""
    if threading.current_thread() is not threading.main_thread() or _stop.active:
        yield
        return

    def requested(number, frame):
        if _stop.requested and _stop.critical:
            _stop.exit_pending = True
            _say("\nCtrl-C again: stopping as soon as the backup being written is whole.\n")
        elif _stop.requested:
            _stop_at_once()
        else:
            _stop.requested = True
            _say("\nCtrl-C: stopping after the current batch (Ctrl-C again to stop at once).\n")

    previous = signal.signal(signal.SIGINT, requested)
    _stop.active, _stop.requested, _stop.exit_pending = True, False, False
    interrupted = False
    try:
        yield
        raise_if_stop_requested()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:  # once interrupted, the next Ctrl-C (while the process ends) ends it at once, quietly
        signal.signal(signal.SIGINT, (lambda number, frame: _stop_at_once()) if interrupted else previous)
        if interrupted:  # Python's finalization puts SIGINT back to its default, which would kill the
            atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)  # exiting process with -2, not 130
        _stop.active, _stop.requested, _stop.exit_pending = False, False, False


def _stop_at_once() -> None:
    _say("\ninterrupted: a second Ctrl-C; stopped at once. The last completed epoch is kept: continue with "
         "`transfer train --resume` and the --out folder.\n")
    os._exit(130)


def raise_if_stop_requested() -> None:
    """A safe point of `stop_at_safe_points`: raises KeyboardInterrupt if Ctrl-C was pressed."""
    if _stop.requested:
        _stop.requested = False
        raise KeyboardInterrupt


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether `error` is what Python made of a KeyboardInterrupt that arrived inside a C call (a
    `SystemError` whose context is the interrupt)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _say(text: str) -> None:
    """Writes from a signal handler: straight to the terminal's descriptor, no stream's lock taken."""
    import sys

    try:
        os.write(sys.stderr.fileno(), text.encode())
    except (OSError, ValueError, AttributeError):
        pass
