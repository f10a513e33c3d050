"""The house rules, checked: small modules, short parameter lists, folders by role whose imports run
down only (no circle of any kind, imports inside functions included), the output folders' names in a
module that needs nothing else of the project, and the registry's dotted names pointing at real code."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "transfer"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400
#: The folders of `transfer/`, bottom first: a module imports its own folder's and those below it.
LAYERS = ["core", "metrics", "outputs", "data", "models", "training", "evaluation", "reports", "selection", "deploy", "cli"]
MAX_PARAMETERS = 8


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(name: str) -> str | None:
    """The folder of module `name` (`transfer.models.registry` -> `models`); None for the package itself."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """The project modules `path` imports (`from transfer import x` counts as `transfer.x`); with
    `module_level_only` False, every import: inside functions and under `TYPE_CHECKING` too."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "transfer":
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= submodules if submodules & {_name(p) for p in MODULES} else {node.module}
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


def test_every_folder_is_a_known_layer_with_a_docstring_saying_what_lives_there():
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists() and p.name != "datasets")  # datasets/: mapped in by pyproject
    assert folders == sorted(LAYERS)
    for folder in folders:
        assert ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())), folder


def test_imports_run_down_the_layers_only():
    """Every import, inside functions too, goes to the module's own folder or one below it."""
    upward = []
    for path in MODULES:
        name = _name(path)
        if _layer(name) is None:  # the package's own `__init__`: the public entry points, above everything
            continue
        for dependency in _imports(path, module_level_only=False):
            if _layer(dependency) is not None and LAYERS.index(_layer(dependency)) > LAYERS.index(_layer(name)):
                upward.append(f"{name} -> {dependency}")
    assert not upward


def test_no_import_circle_of_any_kind():
    """Imports inside functions included: a circle there is a circle in the design."""
    graph = {_name(path): _imports(path, module_level_only=False) for path in MODULES if _layer(_name(path))}
    graph = {name: {d for d in deps if d in graph and not d.endswith(".cli")} for name, deps in graph.items()}
    done, circles = set(), []

    def visit(name, trail):
        if name in trail:
            circles.append(" -> ".join(trail[trail.index(name):] + [name]))
            return
        if name in done:
            return
        for dependency in sorted(graph.get(name, ())):
            visit(dependency, trail + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not circles


def test_the_layout_of_outputs_needs_nothing_else_of_the_project():
    assert _imports(PACKAGE / "outputs" / "layout.py", module_level_only=False) == set()


def test_the_registrys_dotted_names_point_at_the_code_that_builds_each_backbone():
    """The registry names constructors by dotted path so that reading it imports no TensorFlow; a
    module that moves must take its dotted names along."""
    import importlib

    from transfer.models.registry import BACKBONES

    for spec in BACKBONES.values():
        if spec.constructor:
            module, attribute = spec.constructor.rsplit(".", 1)
            assert callable(getattr(importlib.import_module(module), attribute)), spec.constructor


@pytest.mark.parametrize("script", sorted((PACKAGE.parent / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_each_benchmark_script_runs_its_main(script):
    """A benchmark is a script: `python benchmarks/NAME.py` must run something (the shared module aside)."""
    if script.name == "common.py":
        return
    tree = ast.parse(script.read_text())
    guards = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert guards and any(isinstance(call, ast.Call) for call in ast.walk(guards[-1])), f"{script.name} runs nothing"
