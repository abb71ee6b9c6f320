"""`faceregen/` is the framework-free domain package: nothing of Lightning in it; and no import cycles,
in it or across the project's packages.

The imports are read from the source (every `import` / `from ... import`, at module level or inside
functions, `if TYPE_CHECKING:` blocks included), not by importing anything.
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the Lightning packages and the project's packages that wrap faceregen for training
LIGHTNING_PACKAGES = {"pytorch_lightning", "lightning", "lightning_fabric", "lightning_modules", "datamodules", "callbacks",
                      "training"}
#: the project's packages (the entry points beside them import them; nothing imports the entry points)
PROJECT_PACKAGES = ("faceregen", "lightning_modules", "datamodules", "callbacks", "training")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The modules ``path`` imports; ``from package import name`` counts as importing the submodule
    ``package.name`` when that is a module of ``known``."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return found


def import_graph(*packages: str) -> dict[str, set[str]]:
    files = {module_name(p): p for package in packages or ("faceregen",) for p in sorted((ROOT / package).rglob("*.py"))}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node] & graph.keys():
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
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_finds_cycles_and_their_members():
    graph = {"a": {"b"}, "b": {"c", "numpy"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["d"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_submodule_imports_resolve_to_the_submodule(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("from . import b\nfrom .b import x\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("def f():\n    from ..sub import helpers\n    import pkg.c\n")
    graph = import_graph("pkg")
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.sub", "pkg.c"}


def test_faceregen_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and "faceregen.encoders.identity_encoder" in graph
    assert cycles(graph) == []


def test_the_project_has_no_import_cycles():
    graph = import_graph(*PROJECT_PACKAGES)
    assert "training.runner" in graph and "datamodules.cir3dfair" in graph
    assert cycles(graph) == []


def test_faceregen_imports_nothing_of_lightning():
    offending = {name: sorted(m for m in imports if m.split(".")[0] in LIGHTNING_PACKAGES)
                 for name, imports in import_graph().items()}
    assert {name: found for name, found in offending.items() if found} == {}
