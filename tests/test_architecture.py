"""The package's architecture, checked from its source: every module is parsed with ``ast``
(nothing is imported), every ``import`` is an edge of the import graph, function-level (lazy)
and type-checking imports included, and the graph must have no cycle and point only
downward through the layers below. The data layer imports nothing above it. Every function
takes at most five positional parameters, and every module the docs name exists.

    python -m pytest tests/test_architecture.py
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "noisystudent"

# The layers, lowest first, each with the modules or folders it holds and why it sits there. A
# module may import its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, set[str], str]] = [
    ("foundation", {"noisystudent", "core"},
     "noisystudent/core/: the run directory, its files and step keys, settings, devices and "
     "processes: what every command stands on, knowing no image, model or label"),
    ("data", {"data", "noise"},
     "images as uint8 rows, where they come from, and the student's input noise on them"),
    ("labels", {"labels"},
     "the pseudo-label store: what a labeling leaves on disk, readable without a model"),
    ("models", {"models"},
     "building, saving, rebuilding and timing models, and the input they expect"),
    ("training", {"training"},
     "the one loop and the tasks, losses and optimizer it runs, for any command"),
    ("deploy", {"deploy"},
     "a trained model put to use: predict, ONNX export and runtime, what a model costs"),
    ("reports", {"reports"},
     "what a run measured and shows: metrics, robustness, report.md, report.html"),
    ("plan", {"plan"},
     "the settings self-train plans from the data, the machine's speed and the budget, "
     "including the report's corruption test"),
    ("stages", {"stages"},
     "the commands' steps, and the self-training loop that runs them with the plan and "
     "the report"),
    ("cli", {"cli", "__main__", "api", "settings_page"},
     "the noisystudent command, the Python API over the stages' functions, and the settings "
     "page written from both the settings and the plan"),
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``module`` imports anywhere in its file: ``from X import name``
    counts as X.name where that is a module, else as X."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def layer_of(module: str, layers=LAYERS) -> int:
    """The index of the layer a module's top-level name (below ``noisystudent``) is in."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else parts[0]
    for index, (_, members, _) in enumerate(layers):
        if top in members:
            return index
    raise KeyError(f"{module} is in no layer of tests/test_architecture.py: declare it")


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import from a lower layer into a higher one, as 'a (layer) -> b (layer)'."""
    return [f"{module} ({layers[layer_of(module, layers)][0]}) -> {target} "
            f"({layers[layer_of(target, layers)][0]})"
            for module, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target, layers) > layer_of(module, layers)]


GRAPH = import_graph()


def test_every_module_is_in_a_declared_layer():
    for module in GRAPH:
        layer_of(module)


def test_there_is_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_imports_only_go_downward():
    assert upward_imports(GRAPH) == []


def test_the_data_layer_imports_nothing_above_it():
    data = [name for name, _, _ in LAYERS].index("data")
    above = {f"{module} -> {target}" for module, targets in GRAPH.items()
             if module.startswith("noisystudent.data") for target in targets
             if layer_of(target) > data}
    assert not above
    # it sees imports
    assert GRAPH["noisystudent.data.loaders"] >= {"noisystudent.core.distributed"}


def test_the_checker_catches_an_upward_import_and_a_cycle(tmp_path):
    """A synthetic package: its data module reaches up into a stage (lazily, inside a
    function) and the stage imports the data module back."""
    root = tmp_path / "noisystudent"
    (root / "data").mkdir(parents=True)
    (root / "stages").mkdir()
    (root / "core").mkdir()
    for init in (root, root / "data", root / "stages", root / "core"):
        (init / "__init__.py").write_text("")
    (root / "core" / "errors.py").write_text("class UserError(Exception):\n    pass\n")
    (root / "data" / "rows.py").write_text(
        "from noisystudent.core.errors import UserError\n\n\n"
        "def load():\n    from ..stages.train import train\n    return train\n")
    (root / "stages" / "train.py").write_text(
        "from noisystudent.data import rows\n\n\ndef train():\n    return rows\n")
    graph = import_graph(root)
    assert graph["noisystudent.data.rows"] == {"noisystudent.core.errors",
                                               "noisystudent.stages.train"}
    assert upward_imports(graph) == [
        "noisystudent.data.rows (data) -> noisystudent.stages.train (stages)"]
    assert find_cycle(graph) == ["noisystudent.data.rows", "noisystudent.stages.train",
                                 "noisystudent.data.rows"]
    with pytest.raises(KeyError, match="declare it"):
        layer_of("noisystudent.newfolder.thing")


MAX_POSITIONAL = 5


def positional_parameters(root: Path = PACKAGE) -> list[str]:
    """Functions taking more than MAX_POSITIONAL positional parameters (self and cls aside):
    the rest belong after a ``*``, named at every call."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in node.args.posonlyargs + node.args.args
                         if a.arg not in ("self", "cls")]
                if len(names) > MAX_POSITIONAL:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}")
    return found


def test_no_function_takes_more_than_five_positional_parameters():
    assert positional_parameters() == []


DOCS = [PACKAGE.parent / "README.md", PACKAGE.parent / "BENCHMARKS.md",
        PACKAGE.parent / "benchmarks" / "HISTORY.md",
        *sorted((PACKAGE.parent / "docs").glob("*.md"))]


def named_in_docs() -> list[tuple[str, str]]:
    """(document, what it names): ``from noisystudent.x import y`` lines, dotted names such
    as ``noisystudent.stages.train.train``, and ``noisystudent/...py`` paths."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        found += [(doc.name, f"{m[1]}.{name.strip()}")
                  for m in re.finditer(r"from (noisystudent[\w.]*) import ([\w, ]+)", text)
                  for name in m[2].split(",") if name.strip()]
        found += [(doc.name, m[0]) for m in re.finditer(r"(?<![\w/])noisystudent(?:\.\w+)+",
                                                        text)]
        found += [(doc.name, m[1]) for m in re.finditer(r"`(noisystudent/[\w/]+\.py)`", text)]
    return found


def resolves(name: str) -> bool:
    if name.endswith(".py"):
        return (PACKAGE.parent / name).is_file()
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        return all((found := getattr(found, part, None)) is not None for part in parts[i:])
    return False


def test_the_docs_name_modules_that_exist():
    """A module moved or renamed fails here until the docs follow it."""
    named = named_in_docs()
    assert ("api.md", "noisystudent.stages.train.train") in named
    assert [f"{doc}: {name}" for doc, name in named if not resolves(name)] == []


def test_the_python_api_holds_a_function_per_command():
    """docs/api.md's imports: every command's function from one module, whatever its folder."""
    import noisystudent.api as api
    from noisystudent.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    functions = {"self-train": "self_train", "pseudo-label": "pseudo_label",
                 "export": "export_onnx"}
    for command in commands - {"pack"}:  # pack writes a .npy: no Python function of its own
        assert callable(getattr(api, functions.get(command, command))), command
    assert all(hasattr(api, name) for name in api.__all__)


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def oversized(root: Path = PACKAGE) -> list[str]:
    """Modules over MAX_MODULE_LINES lines and functions over MAX_FUNCTION_LINES: a module
    that long holds more than one concern, a function that long more than one step."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(root.parent)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_module_over_500_lines_and_no_function_over_80():
    assert oversized() == []
