"""The README and the pages under docs/: the README stays short, every relative link leads to a
file, every docs page is reachable from the README, every `transfer ...` command shown parses with
the real command line, and the README's quick start uses the commands `make demo` runs.

No training and no TensorFlow: parsing a command builds its Click context and nothing else."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

try:  # the Click that the CLI's commands raise from (Typer 0.2x carries its own copy)
    from typer import _click as click
except ImportError:
    import click

from transfer.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_LIMIT = 15_000  # bytes: what a newcomer reads in ten minutes; the rest lives in docs/


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _without_code(text: str) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, numbered from 1, inline code spans blanked."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        lines.append((number, re.sub(r"`[^`]*`", "", line)))
    return lines


def _links(page: Path) -> list[tuple[int, str]]:
    """The relative link targets of `page` (markdown links and images), without their #fragment."""
    found = []
    for number, line in _without_code(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
                continue  # http(s), mailto: ... and anchors within the page
            found.append((number, target.split("#", 1)[0]))
    return found


def _shell_blocks(text: str) -> list[tuple[int, str]]:
    """Every line of the page's bash/sh/unlabeled fenced blocks, numbered from 1."""
    lines, fence, shell = [], None, False
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None:
            if opened:
                fence, shell = opened.group(1), opened.group(2).lower() in SHELL_FENCES
            continue
        if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence = None
        elif shell:
            lines.append((number, line))
    return lines


def _commands(page: Path) -> list[tuple[int, str]]:
    """`transfer ...` command lines of the page's shell blocks: prompt and trailing comment removed."""
    found = []
    for number, line in _shell_blocks(page.read_text(encoding="utf-8")):
        line = line.strip()
        line = line[2:] if line.startswith("$ ") else line
        if line.startswith("transfer "):
            found.append((number, line))
    return found


def _words(line: str) -> list[str]:
    """The line's words as the shell splits them, a trailing `# comment` dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _parse(words: list[str]) -> None:
    """Parses `transfer WORDS...` with the real command line, as far as Click goes before running."""
    group = typer.main.get_command(app)
    assert words[0] == "transfer"
    args = words[1:]
    options = {name: param for param in group.params for name in param.opts + param.secondary_opts}
    while args and args[0].startswith("-"):  # global options (--verbose), taken as the group takes them
        option = options.get(args[0].split("=", 1)[0])
        if option is None:
            raise click.exceptions.UsageError(f"No such option of `transfer`: {args[0]}")
        args = args[1:] if option.is_flag or "=" in args[0] else args[2:]
    assert args, "no command after `transfer`"
    name, rest = args[0], args[1:]
    with group.make_context("transfer", [name], resilient_parsing=True) as parent:
        command = group.get_command(parent, name)
        if command is None:
            raise click.exceptions.UsageError(f"No such command: {name}")
        with command.make_context(name, rest, parent=parent, resilient_parsing=False):
            pass


def _shown_commands() -> list:
    cases = []
    for page in PAGES:
        for number, line in _commands(page):
            where = f"{_name(page)}:{number}"
            cases.append(pytest.param(where, line, id=where))
    return cases


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move detail into docs/"


def test_readme_keeps_the_two_commands_first():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# transfer"
    block = "\n".join(lines[1:8])
    assert "make demo" in block and "make test" in block, "the README opens with `make demo` and `make test`"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_lead_to_files(page):
    broken = [f"{_name(page)}:{number}: {target}" for number, target in _links(page)
              if target and not (page.parent / target).exists()]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    assert DOCS, "no pages under docs/"
    linked = {(README.parent / target).resolve() for _, target in _links(README) if target}
    missing = [_name(page) for page in DOCS if page.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", DOCS, ids=_name)
def test_docs_pages_have_a_title_and_lead_back(page):
    lines = page.read_text(encoding="utf-8").splitlines()
    assert lines and lines[0].startswith("# "), f"{_name(page)} starts with a `# Title`"
    assert any((page.parent / target).resolve() == README.resolve() for _, target in _links(page)), \
        f"{_name(page)} links back to README.md"


def test_commands_are_found():
    """The tests below see the commands: the README's quick start and the cheat sheet at least."""
    found = {line.split()[1] for page in PAGES for _, line in _commands(page)}
    assert {"train", "predict", "export", "serve", "evaluate", "report", "compare"} <= found, found


@pytest.mark.parametrize(("where", "line"), _shown_commands())
def test_shown_command_parses(where, line):
    try:
        words = _words(line)
    except ValueError as error:  # unbalanced quotes
        pytest.fail(f"{where}: cannot split `{line}`: {error}")
    try:
        _parse(words)
    except click.exceptions.ClickException as error:  # UsageError, BadParameter, NoSuchOption, ...
        pytest.fail(f"{where}: `{line}` is refused by the command line: {error.format_message()}")


def _quick_start() -> list[str]:
    """The `transfer` commands of the README's `## Quick start` section."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Quick start\b.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, "README.md has a `## Quick start` section"
    return [line for _, line in _commands_in(section.group(0))]


def _commands_in(text: str) -> list[tuple[int, str]]:
    return [(n, line.strip().removeprefix("$ ")) for n, line in _shell_blocks(text)
            if line.strip().removeprefix("$ ").startswith("transfer ")]


def _demo_commands() -> set[str]:
    """The subcommands the Makefile's `demo` recipe runs (`$(BIN)/transfer NAME ...`)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^demo:.*?\n((?:\t.*\n|\s*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has a `demo` target"
    return set(re.findall(r"\$\(BIN\)/transfer\s+([a-z][a-z-]*)", recipe.group(1)))


def test_quick_start_uses_what_make_demo_runs():
    quick = _quick_start()
    assert len(quick) >= 4, quick
    used = [_words(line)[1] for line in quick]
    for needed in ("train", "predict", "export"):
        assert needed in used, f"the quick start shows `transfer {needed}`"
    demo = _demo_commands()
    assert {"train", "predict", "export", "report"} <= demo, demo
    missing = sorted(set(used) - demo)
    assert not missing, f"quick-start commands that `make demo` does not run: {missing}"


def _command_names() -> list[str]:
    group = typer.main.get_command(app)
    return list(group.commands)


@pytest.mark.parametrize("name", _command_names())
def test_each_command_says_what_it_is_for_with_an_example_that_parses(name):
    """`transfer --help` lists each command with one whole line; its own --help ends with an example."""
    group = typer.main.get_command(app)
    command = group.commands[name]
    summary = command.get_short_help_str(limit=45)
    assert summary and not summary.endswith("..."), f"`{name}`'s one-line help is cut in `transfer --help`: {summary}"
    examples = [line.strip()[len("Example: "):] for line in (command.help or "").splitlines() if line.strip().startswith("Example: ")]
    assert len(examples) == 1, f"`transfer {name} --help` shows {len(examples)} examples"
    assert examples[0].startswith(f"transfer {name} ") or examples[0] == f"transfer {name}"
    _parse(_words(examples[0]))


def test_the_training_options_table_is_the_declarations():
    """docs/commands.md's "Training options" section is written from the options' declarations; after
    changing one, rewrite it: python -m transfer.cli.parameters --markdown docs/commands.md"""
    from transfer.cli.parameters import OPTIONS_HEADING, options_markdown
    from transfer.training.option_fields import FIELDS, option_flag

    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert OPTIONS_HEADING in text
    assert OPTIONS_HEADING + text.split(OPTIONS_HEADING, 1)[1] == options_markdown(), (
        "docs/commands.md differs from the declarations: python -m transfer.cli.parameters --markdown docs/commands.md")
    for name in FIELDS:
        assert f"| `{option_flag(name)}`" in text, name
