"""No import circle in ``cds/``: the module graph, lazy imports included, is acyclic.

Why lazy imports count: a circle hidden behind an import inside a function (``rules.loader`` ->
``rules.validators`` -> ``authoring.runner`` -> ``engine`` -> ``rules.loader``, issue 9) still ties
the layers together: loading rules ran the rule tests, and no layer could be used or changed alone.
Imports under ``if TYPE_CHECKING:`` are for annotations only and are left out. Like Python, the graph
treats ``from package import submodule`` as an import of the submodule; a package's ``__init__``
runs before any of its submodules anyway and is not an edge of its own.

The graph is built from the source with :mod:`ast` (nothing is imported), so the test also shows the
circle when one exists: the failure message lists the modules around it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cds"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(submodules)  # ``from cds.service import crud`` imports the submodule crud
            if len(submodules) < len(node.names):  # some names are defined by the package itself
                found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    known = set(files)
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", known)
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def test_the_graph_sees_the_real_imports() -> None:
    graph = import_graph()
    assert "cds.rules.model" in graph["cds.rules.loader"]
    assert "cds.rules.validators" in graph["cds.authoring.gate"]  # a lazy import inside a function counts
    assert "cds.engine" in graph["cds.authoring.gate"]  # imported lazily in gate_ruleset, not only for typing
    assert "cds.facts.labs" not in graph["cds.rules.model"]  # imported under TYPE_CHECKING only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_cds() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_rules_never_import_authoring_or_the_engine() -> None:
    """The layers point one way: rules are data and checks; authoring and the engine use them."""
    graph = import_graph()
    for module, imports in graph.items():
        if module.startswith("cds.rules."):
            wrong = {name for name in imports if name.startswith(("cds.authoring", "cds.engine", "cds.service", "cds.cli"))}
            assert not wrong, f"{module} imports {sorted(wrong)}"
