"""The package's layers: every import (function-level ones too) points down, and no modules import in a cycle.

errors -> io -> modules -> checkpoints -> plugin (data, tasks, criterions, models) -> inference -> evaluation -> cli
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fairseq_esm"
#: top-level names of fairseq_esm, lowest layer first; names in one tuple form one layer
LAYERS = (
    ("errors",),
    ("io",),
    ("modules",),
    ("checkpoints",),
    ("data", "tasks", "criterions", "models"),
    ("inference",),
    ("evaluation",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
PLUGIN = RANK["tasks"]
#: third-party packages a layer below the given rank must not import
HEAVY_FLOOR = {"torch": RANK["modules"], "fairseq": PLUGIN, "fairseq_cli": PLUGIN}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (``from x import y`` gives ``x`` and ``x.y``)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the modules of this package it imports."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in paths and m != name} for name, path in paths.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_belongs_to_a_layer():
    unknown = sorted({layer_of(m) for m in graph()} - set(RANK) - {None})
    assert not unknown, f"top-level names outside LAYERS: {unknown}"


def test_imports_point_down_the_layers():
    upward = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if layer_of(source) and layer_of(target) and RANK[layer_of(target)] > RANK[layer_of(source)]
    ]
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_heavy_dependencies_stay_in_their_layers():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        source = module_name(path)
        rank = RANK.get(layer_of(source), -1)
        for target in imports_of(path):
            top = target.split(".")[0]
            if top in HEAVY_FLOOR and rank < HEAVY_FLOOR[top]:
                wrong.append(f"{source} imports {target}")
            if top in ("fairseq", "fairseq_cli") and rank != PLUGIN:
                wrong.append(f"{source} imports {target}: only the plugin layer imports fairseq")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycles():
    edges, index, low, stack, on_stack, cycles = graph(), {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"modules importing each other in a cycle: {cycles}"


@pytest.mark.parametrize("module", ["fairseq_esm", "fairseq_esm.errors", "fairseq_esm.io.fasta", "fairseq_esm.io.a3m",
                                    "fairseq_esm.io.structures", "fairseq_esm.io.dssp", "fairseq_esm.io.clusters"])
def test_light_core_imports_neither_torch_nor_fairseq(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'fairseq') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fair_esm_style_api_is_reachable_from_the_package():
    code = "import fairseq_esm as esm; print(*(getattr(esm, name).__name__ for name in esm.__all__[1:]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [name for name in __import__("fairseq_esm").__all__[1:]]

