"""The house rules, checked: small modules, short parameter lists, no import circles, and the
output folders' names in a module that needs nothing else of the project."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "transfer"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 450
MAX_PARAMETERS = 8


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """The project modules `path` imports (`from transfer import x` counts as `transfer.x`)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "transfer":
            found |= {f"transfer.{alias.name}" for alias in node.names} if node.module == "transfer" else {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "transfer"}
    known = {_name(p) for p in MODULES}
    return {name for name in found if name in known and name != _name(path)}


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_longer_than_the_limit(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_no_library_function_takes_more_than_eight_parameters():
    """The command line's functions are exempt: Typer makes every option a parameter."""
    long = []
    for path in MODULES:
        if path.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs) if a.arg not in ("self", "cls")]
                if len(names) > MAX_PARAMETERS:
                    long.append(f"{_name(path)}.{node.name} ({len(names)})")
    assert not long


def test_modules_import_each_other_without_a_circle():
    """At module level: a circle there fails at import, or works by the order of imports alone."""
    graph = {_name(path): _imports(path, module_level_only=True) for path in MODULES}
    graph = {name: {d for d in deps if not (name == "transfer.cli" and d.startswith("transfer.cli."))} for name, deps in graph.items()}
    visiting, done, circles = set(), set(), []

    def visit(name, trail):
        if name in visiting:
            circles.append(" -> ".join(trail[trail.index(name):] + [name]))
            return
        if name in done:
            return
        visiting.add(name)
        for dependency in sorted(graph.get(name, ())):
            visit(dependency, trail + [name])
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not circles


def test_the_layout_of_outputs_needs_nothing_else_of_the_project():
    assert _imports(PACKAGE / "layout.py", module_level_only=False) == set()


@pytest.mark.parametrize("script", sorted((PACKAGE.parent / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_each_benchmark_script_runs_its_main(script):
    """A benchmark is a script: `python benchmarks/NAME.py` must run something (the shared module aside)."""
    if script.name == "common.py":
        return
    tree = ast.parse(script.read_text())
    guards = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert guards and any(isinstance(call, ast.Call) for call in ast.walk(guards[-1])), f"{script.name} runs nothing"
