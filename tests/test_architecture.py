"""The layout's rules, checked on the source (docs/architecture.md): one direction of imports
between the top-level packages, Flower types in the core only where they are allowed, a run
config that imports no data or model code, no import circle, and small files."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedticket", "strategies", "clients", "simulations", "benchmarks", "tests")
#: folders at the top of the repository that are packages of the ``fedticket`` namespace
APP_FOLDERS = ("strategies", "clients", "simulations")
MAX_LINES = 400
#: top-level folder -> the folders whose modules it may import
MAY_IMPORT = {
    "fedticket": {"fedticket"},
    "strategies": {"fedticket", "strategies"},
    "clients": {"fedticket", "clients"},
    "simulations": {"fedticket", "strategies", "clients", "simulations"},
    "benchmarks": set(PACKAGES),  # the identity guard runs on the tests' loopback grid
    "tests": set(PACKAGES),
}
#: the only core modules that touch Flower: payload records, state records, --run-config syntax
FLOWER_IN_CORE = {
    "fedticket/wire/records.py",
    "fedticket/wire/state_records.py",
    "fedticket/config/flower_args.py",
}


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in APP_FOLDERS:
        parts.insert(0, "fedticket")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _folder(module: str) -> str:
    """The top-level folder a module's file is in (``fedticket.strategies.base``: strategies)."""
    parts = module.split(".")
    return (
        parts[1] if parts[0] == "fedticket" and parts[1:2] and parts[1] in APP_FOLDERS else parts[0]
    )


def _imports(path: Path, *, top_level_only: bool) -> Iterator[str]:
    """Absolute names of the project modules (and others) ``path`` imports; with
    ``top_level_only``, only imports run at import time (not in functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                yield base
                yield from (f"{base}.{alias.name}" for alias in node.names)
            elif (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)) or (
                top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            ):
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    yield from visit(getattr(node, field, None) or [])

    yield from visit(tree.body)


MODULES = {_module_name(p): p for p in _sources()}


def _project_targets(path: Path, *, top_level_only: bool) -> set[str]:
    """Project modules ``path`` imports, with the packages above each (importing
    ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first)."""
    targets = set()
    for name in _imports(path, top_level_only=top_level_only):
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in MODULES:
                targets.add(prefix)
    own = _module_name(path)
    ancestors = {own.rsplit(".", k)[0] for k in range(own.count(".") + 1)}
    return targets - ancestors  # a package is initialising already when its modules import


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_is_over_the_line_limit(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines; split it"


def test_imports_go_one_way_between_the_top_level_packages() -> None:
    wrong = [
        f"{p.relative_to(ROOT)} imports {target}"
        for p in _sources()
        for target in _project_targets(p, top_level_only=False)
        if _folder(target) not in MAY_IMPORT[p.relative_to(ROOT).parts[0]]
    ]
    assert wrong == []


def test_the_app_packages_are_imported_through_the_namespace() -> None:
    """``import strategies`` would work from the repository root only, and import a second copy."""
    top_level = [
        f"{p.relative_to(ROOT)} imports {name}"
        for p in _sources()
        for name in _imports(p, top_level_only=False)
        if name.split(".")[0] in APP_FOLDERS
    ]
    assert top_level == []


def test_the_layer_rule_sees_the_namespace() -> None:
    assert _module_name(ROOT / "strategies" / "base.py") == "fedticket.strategies.base"
    assert (
        _module_name(ROOT / "simulations" / "edge" / "__init__.py") == "fedticket.simulations.edge"
    )
    assert _folder("fedticket.clients.handlers") == "clients"
    assert _folder("fedticket.wire.records") == "fedticket"
    server_app = _project_targets(ROOT / "simulations" / "server_app.py", top_level_only=False)
    assert {"fedticket.strategies", "fedticket.clients"} <= server_app


def test_flower_is_imported_in_the_core_only_where_allowed() -> None:
    users = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "fedticket").rglob("*.py")
        if any(n.split(".")[0] == "flwr" for n in _imports(p, top_level_only=False))
    }
    assert users <= FLOWER_IN_CORE, sorted(users - FLOWER_IN_CORE)


def test_the_run_config_imports_no_data_model_or_algorithm_code() -> None:
    for path in (ROOT / "fedticket" / "config").rglob("*.py"):
        targets = _project_targets(path, top_level_only=False)
        own = ("fedticket.config", "fedticket.registry")
        outside = {t for t in targets if not t.startswith(own)}
        assert outside <= {"fedticket"}, f"{path.name} imports {sorted(outside)}"


def test_no_import_circle() -> None:
    graph = {name: _project_targets(path, top_level_only=True) for name, path in MODULES.items()}
    circles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert circles == [], circles


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(c) for c in _strongly_connected(graph) if len(c) > 1] == [["a", "b", "c"]]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components
