"""The package's shape: no module over 400 lines, no import cycle, imports where they show.

An import cycle, or a module that grows into a hub, is a design problem before it is a
bug; these checks keep them from coming back unnoticed. Imports inside functions count as
dependencies (as do ``TYPE_CHECKING`` imports). A volprep module imported inside a
function hides the graph, so each one left is listed below with the reason it stays.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "volprep"
MAX_LINES = 400

# (module, imported volprep module): why the import stays inside a function
LATE_IMPORTS = {
    ("volprep.cli", "*"): "each command imports what it needs: `volprep --help` stays fast",
    ("volprep.config", "volprep.reductions"): "the registry is the list of `reduce` names; "
                                              "its units depend on preprocess code that reads the config",
    ("volprep.loader", "volprep.schema_tf"): "TensorFlow, imported when a dataset is built",
    ("volprep.loader_direct", "volprep.schema_tf"): "TensorFlow, imported when a dataset is built",
    ("volprep.loader", "volprep.augment.tf_ops"): "TensorFlow",
    ("volprep.verify", "volprep.schema_tf"): "TensorFlow, only for the full parse",
    ("volprep.bench", "volprep.loader"): "TensorFlow",
    ("volprep.schema_tf", "volprep.preprocess.wavelet_tf"): "TensorFlow graph code, only for wavelet records",
    ("volprep.encodings", "volprep.kernels"): "numba kernels: only the converter encodes; readers stay light",
    ("volprep.report_process", "volprep.report"): "matplotlib and the report: imported by the helper "
                                                  "process, never by the job's process that starts it",
    ("volprep.report_process", "volprep.report_figures"): "the same",
    ("volprep", "*"): "the public API loads on first use: `import volprep` stays light (no TensorFlow)",
    **{(f"volprep.augment.ops.{op}", "volprep.augment.tf_kernels"): "TensorFlow, for the online executor only"
       for op in ("affine", "flip", "fourier_shift", "gamma", "intensity", "rot90", "noise")},
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported volprep module, inside a function?) for every import in a module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:
                targets.append(next((c for c in (f"{base}.{alias.name}", base) if c in known), ""))
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name in known]
        found.extend((t, id(node) in inside) for t in targets if t and t != name)
    return found


def test_no_module_is_over_400_lines() -> None:
    big = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_no_import_cycle() -> None:
    mods = modules()
    graph = {name: {t for t, _ in imports(name, path, set(mods))} - {"volprep"} for name, path in mods.items()}
    cycles = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in done:
                done.add(nxt)
                visit(nxt, [*stack, nxt], done)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            done.add(start)
            visit(start, [start], done)
    assert cycles == []


def test_volprep_imports_inside_functions_are_the_listed_ones() -> None:
    mods = modules()
    late = set()
    for name, path in mods.items():
        for target, in_function in imports(name, path, set(mods)):
            if in_function and (name, "*") not in LATE_IMPORTS and (name, target) not in LATE_IMPORTS:
                late.add((name, target))
    assert late == set(), f"unlisted imports inside functions: {sorted(late)}"
