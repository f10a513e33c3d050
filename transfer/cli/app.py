"""The Typer app and its one error path.

Every error a user can cause ends here as one line, `error: ...`, and an exit code, without a
traceback: the library's `TransferError`s (2 for bad input or options, 1 otherwise), the file
system's and memory's errors (1), Ctrl-C (130), and Click's own parsing errors (2, with the closest
choice for a near miss). TensorFlow's own start-up lines (written by its C++ runtime straight to the
terminal) are hidden unless `--verbose`.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from contextlib import contextmanager
from typing import Annotated, Iterator

import typer
from typer.core import TyperGroup

try:  # Typer 0.2x carries its own copy of Click, whose exceptions its commands raise
    from typer import _click as click
except ImportError:  # older Typer uses Click itself
    import click
from rich.console import Console
from rich.markup import escape

from transfer.core.errors import TransferError, caused_by_interrupt
from transfer.core.version import __version__

class _OneLineError(click.exceptions.ClickException):
    """Click's own parsing errors (an unknown option, a value not among the choices, a missing
    argument) said as every other error is: one `error:` line, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        messages.print(f"[bold red]error:[/bold red] {escape(self.message)}", highlight=False)


#: Names users type for a choice that has another name here.
_ALIASES = {"tflite": "litert", "tf-lite": "litert", "saved_model": "savedmodel", "saved-model": "savedmodel"}


#: The options of `transfer` itself, which go before the command.
_GLOBAL_OPTIONS = ("--verbose", "--version")


def _one_line(error: click.exceptions.UsageError, args: list[str] = ()) -> _OneLineError:
    """`error` as one line: the value received (`args` are the command's own), the closest choice
    for a near miss, and the command's --help."""
    import difflib
    import re

    text = " ".join(error.format_message().replace("Value error, ", "").split())
    if isinstance(error, click.exceptions.NoSuchOption) and error.option_name in _GLOBAL_OPTIONS:
        text = f"{error.option_name} is an option of transfer itself: put it before the command (transfer {error.option_name} COMMAND ...)"
    elif isinstance(error, click.exceptions.NoSuchOption) and error.possibilities:
        close = difflib.get_close_matches(error.option_name, sorted(error.possibilities), n=1, cutoff=0.0)
        text = f"No such option: {error.option_name}. Did you mean {close[0]}?"
    received = _received(error, args)
    if received is not None and repr(received) not in text:
        text = text.rstrip(".") + f"; received {received!r}"
    text = text if text.endswith((".", "?")) else text + "."
    wrong = re.search(r"'([^']*)' is not one of (.*)\.$", text)
    if wrong:
        value, choices = wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2))
        close = [_ALIASES[value.lower()]] if value.lower() in _ALIASES else difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        if close and close[0] in choices:
            text += f" Did you mean {close[0]}?"
    command = " ".join(["transfer", *(error.ctx.command_path.split()[1:] if error.ctx is not None else [])])
    return _OneLineError(f"{text} See `{command} --help`.")


def _received(error: click.exceptions.UsageError, args: list[str]) -> str | None:
    """The value given to the option a `BadParameter` is about, as typed (its last, as Click takes
    the last), or `None`."""
    param = getattr(error, "param", None)
    names = [*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())] if param is not None else []
    received = None
    for index, word in enumerate(args):
        for name in names:
            if word == name and index + 1 < len(args):
                received = args[index + 1]
            elif word.startswith(name + "="):
                received = word[len(name) + 1:]
    return received


class _App(TyperGroup):
    """The `transfer` group: every parsing error of it and of its commands is one line (`_one_line`)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.exceptions.UsageError as error:
            raise _one_line(error) from None

    def invoke(self, ctx):
        args = [*getattr(ctx, "protected_args", ()), *ctx.args]  # the command's own, as typed
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.exceptions.UsageError as error:
            raise _one_line(error, args) from None


app = typer.Typer(
    cls=_App,
    help="Transfer learning on small image datasets: train, predict, export, evaluate, report, compare.\n\nExample: transfer train photos/ --out runs/photos, then transfer predict runs/photos photo.jpg",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # Click's plain help: every option name whole, at any terminal width
)


# stdout carries what the user asked for; stderr progress, warnings and errors. Neither hard-wraps
# long lines (paths, URLs) when it is not a terminal.
results = Console(width=None if sys.stdout.isatty() else 200)


messages = Console(stderr=True, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Prints an error as one clear line and exits with its code: a `TransferError` with its own
    (2 for bad input or options, 1 otherwise), a file-system or out-of-memory error with 1, 130 on
    Ctrl-C."""
    try:
        yield
    except TransferError as error:
        fail(" ".join(str(error).split("\n")), error.exit_code, error.label)
    except KeyboardInterrupt:
        messages.print("[bold red]interrupted[/bold red]")
        raise typer.Exit(code=130) from None
    except BrokenPipeError:  # the reader of stdout (`| head`) has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(code=0) from None
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        fail(f"cannot write or read{where}: {error.strerror or error}. Free some space, or choose a location "
               f"you can write to; the earlier output, if any, is unchanged.", 1)
    except Exception as error:
        if caused_by_interrupt(error):  # a Ctrl-C that arrived inside a C call, as Python rewrote it
            messages.print("[bold red]interrupted[/bold red]")
            raise typer.Exit(code=130) from None
        if type(error).__name__ != "ResourceExhaustedError":
            raise
        if "space" in str(error).lower():  # TensorFlow's file system reports a full disk so too
            fail(f"no space left to write ({str(error).splitlines()[0][:200]}). Free some space; the earlier "
                   f"output, if any, is unchanged.", 1)
        fail("out of memory while training or predicting. Lower --batch-size or --image-size.", 1)


def fail(text: str, code: int, label: str = "error") -> None:
    messages.print(f"[bold red]{label}:[/bold red] {escape(text)}", highlight=False)
    raise typer.Exit(code=code)


def _version(value: bool) -> None:
    if value:
        results.print(f"transfer {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_version)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show TensorFlow's own start-up and log lines.")] = False,
) -> None:
    """Transfer learning on small image datasets: train, predict, export, evaluate, report, compare."""
    if not verbose:
        _hide_native_logs()
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")


def _hide_native_logs() -> None:
    """Sends what TensorFlow's C++ runtime writes to the terminal's stderr (oneDNN, absl, CUDA
    notices) to /dev/null; this program's own messages and Python's warnings keep the terminal."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # its Python warnings too (tf.function retracing)
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, ValueError, io.UnsupportedOperation):  # not a real stream (tests)
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
