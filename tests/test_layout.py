"""How the code is laid out: imports run one way, data → model → training → export → serving, and
no two modules import each other, even through a function-level import."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from paths import REPO_ROOT

STAGES = ["wdrec.data", "wdrec.model", "wdrec.training", "wdrec.export", "serving"]
# The composition roots: each wires every stage together, so each may import any of them.
ROOTS = {"wdrec.job", "wdrec.cli", "wdrec.tune"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder in (REPO_ROOT / "src" / "wdrec", REPO_ROOT / "serving"):
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder.parent).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports() -> dict[str, set[str]]:
    """Each module's imports of other modules of the project, wherever in the module they stand."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        graph[name] = {other for other in imported if other in modules and other != name}
    return graph


def _stage(module: str) -> int | None:
    return next((i for i, stage in enumerate(STAGES) if module == stage or module.startswith(stage + ".")), None)


def test_no_module_imports_itself_back() -> None:
    graphlib.TopologicalSorter(_imports()).prepare()  # raises CycleError naming the cycle


def test_imports_run_one_way_through_the_stages() -> None:
    backwards = [
        f"{module} imports {other}"
        for module, imported in _imports().items()
        if module not in ROOTS
        for other in imported
        if _stage(other) is not None and (_stage(module) is None or _stage(other) > _stage(module))
    ]
    assert not backwards
