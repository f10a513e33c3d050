"""The command line's choices and shared options, taken from the library's own lists.

The options that choose the data, the model and the recipe (the fields of
`transfer.training.options.TrainOptions`) are made here from their declarations in
`transfer.training.option_fields`: `with_train_options(COMMAND)` gives a command exactly the options
whose metadata names it, `train_options_of` turns the values back into a `TrainOptions`, and
`options_markdown` writes the table of docs/commands.md (`python -m transfer.cli.parameters --markdown`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from transfer.datasets import RECIPES
from transfer.core.choices import EXPORT_FORMATS, QUANTIZATIONS
from transfer.training.option_fields import COMMANDS, FIELDS, option_flag, option_help, options_of
from transfer.training.options import TrainOptions


def _choices(name: str, values) -> type[Enum]:
    """A `str` Enum of the library's own list of values, so the CLI offers exactly what it accepts."""
    return Enum(name, {value: value for value in values}, type=str)


DatasetName = _choices("DatasetName", RECIPES)


OutputFormat = _choices("OutputFormat", ("table", "csv", "json"))


ExportFormat = _choices("ExportFormat", EXPORT_FORMATS)


Quantization = _choices("Quantization", QUANTIZATIONS)


@functools.cache
def choice_enum(name: str) -> type[Enum]:
    """The `str` Enum of training option `name`'s declared choices (one class per option)."""
    return _choices("".join(part.title() for part in name.split("_")), FIELDS[name].metadata["choices"])


def train_option(name: str, command: str = "train") -> tuple[object, object]:
    """The annotation (`Annotated[type, typer.Option(...)]`) and default of training option `name` in
    `command`, made from its declaration: the field's type and default, its choices as an Enum, its
    flag, its help (`command`'s own where it has one)."""
    field = FIELDS[name]
    metadata = field.metadata
    kind = typing.get_type_hints(TrainOptions)[name]
    optional = type(None) in typing.get_args(kind)
    base = next(arg for arg in typing.get_args(kind) if arg is not type(None)) if optional else kind
    if "choices" in metadata:
        base = choice_enum(name)
    elif metadata.get("path"):
        base = Path
    flags = () if base is bool and metadata.get("negatable") else (option_flag(name),)
    if flags == ("--" + name.replace("_", "-"),) and base is not bool:
        flags = ()  # Typer's own spelling
    option = typer.Option(*flags, help=option_help(name, command), show_default=metadata.get("show_default", True))
    default = base(field.default) if "choices" in metadata and field.default is not None else field.default
    return Annotated[Optional[base] if optional else base, option], default


PreprocessMode = choice_enum("preprocess")
CacheDir = train_option("cache_dir")[0]


def with_train_options(command: str):
    """Gives the decorated command function the training options whose declaration names `command`
    (`transfer.training.option_fields`), after its own; they reach it as `**options`."""
    if command not in COMMANDS:
        raise ValueError(f"{command!r} takes no training options; those that do: {', '.join(COMMANDS)}")

    def decorate(function):
        own = [p for p in inspect.signature(function, eval_str=True).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = []
        for name in options_of(command):
            annotation, default = train_option(name, command)
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
        function.__signature__ = inspect.Signature(own + added)
        function.__annotations__ = {**function.__annotations__, **{p.name: p.annotation for p in added}}
        return function

    return decorate


def train_options_of(chosen: dict) -> TrainOptions:
    """The `TrainOptions` of the command-line values of the training options (choices and paths as strings)."""
    def plain(value):
        return value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value

    return TrainOptions(**{name: plain(chosen[name]) for name in FIELDS if name in chosen})


def option_name(parameter: str) -> str:
    """How the command line spells a command's parameter (`candidates` is `--backbones`)."""
    return "DATA_DIR" if parameter == "data_dir" else option_flag(parameter)


#: The heading of the generated section of docs/commands.md, which runs to the end of the file.
OPTIONS_HEADING = "## Training options"


def options_markdown() -> str:
    """The "Training options" section of docs/commands.md: one row per option, from its declaration."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [
        OPTIONS_HEADING, "",
        "Written from the options' declarations (`transfer/training/option_fields.py`) by "
        "`python -m transfer.cli.parameters --markdown docs/commands.md`; a test fails when they differ. "
        "`audit` and `probe` give a few of them another meaning: see `transfer audit --help`, `transfer probe --help`.", "",
        "| Option | Default | Group | Commands | Help |",
        "|---|---|---|---|---|",
    ]
    for name, field in FIELDS.items():
        commands = field.metadata["commands"]
        rows.append("| " + " | ".join((
            f"`{option_flag(name)}`" + (f" / `{option_flag(name, negated=True)}`" if field.metadata.get("negatable") else ""), "" if field.default is None else f"`{field.default}`", field.metadata["group"],
            "all" if commands == COMMANDS else ", ".join(commands), cell(option_help(name)),
        )) + " |")
    return "\n".join(rows) + "\n"


def write_options_markdown(path: Path) -> None:
    """Replaces the "Training options" section of the page at `path` (to its end) by `options_markdown()`."""
    text = path.read_text(encoding="utf-8")
    kept = text.split(OPTIONS_HEADING, 1)[0].rstrip("\n")
    path.write_text(f"{kept}\n\n{options_markdown()}", encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["--markdown"] or len(sys.argv) != 3:
        sys.exit("usage: python -m transfer.cli.parameters --markdown docs/commands.md")
    write_options_markdown(Path(sys.argv[2]))
