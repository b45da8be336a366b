"""Every module says what it exports (`__all__`, sorted, complete), no module reaches into another's
private names, and the modules import one another without a cycle (even inside functions): read from the
source, so a new import that breaks any of it fails here."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "jobcast"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))
           if p.name != "__main__.py"}  # (an entry script: nothing to export)


def _exports(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    return None


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _imports_from_jobcast() -> list[tuple[str, str, str]]:
    """(importing module, imported module, name) for every `from jobcast... import name`, anywhere in a module."""
    found = []
    for importer, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jobcast":
                found += [(importer, node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_sorted_all_of_names_it_defines(module: str) -> None:
    exports = _exports(MODULES[module])
    assert exports is not None, f"{module} has no __all__"
    assert exports == sorted(exports), f"{module}.__all__ is not sorted"
    assert not set(exports) - _defined(MODULES[module]), f"{module}.__all__ names what it does not define"


def test_what_one_module_imports_from_another_is_in_its_all() -> None:
    missing = sorted(f"{importer}: {name} from {source}" for importer, source, name in _imports_from_jobcast()
                     if source in MODULES and name not in (_exports(MODULES[source]) or [])
                     and f"{source}.{name}" not in MODULES)
    assert not missing, "imported but not exported:\n" + "\n".join(missing)


def test_no_module_imports_another_ones_private_names() -> None:
    private = sorted(f"{importer}: {name} from {source}" for importer, source, name in _imports_from_jobcast()
                     if name.startswith("_"))
    assert not private, "private names used across modules:\n" + "\n".join(private)


def _packages_above(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for module, tree in MODULES.items():
        checking_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                         and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        deps = graph.setdefault(module, set())
        for node in ast.walk(tree):
            if id(node) in checking_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jobcast":
                deps.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                            for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "jobcast")
        # Importing `a.b.c` runs package `a.b`'s __init__ first (already running for a module inside `a.b`).
        deps.update(parent for dep in list(deps) for parent in _packages_above(dep)
                    if parent not in _packages_above(module) and parent != module)
        deps &= MODULES.keys() - {module}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_only_the_store_package_talks_to_redis() -> None:
    """Outside `jobcast.store`, Redis appears only as its exceptions and as the connection type that callers of
    `jobcast.submit` and RQ's workers hand over: no call on a Redis client, no client of one's own."""
    found = []
    for module, tree in MODULES.items():
        if module == "jobcast.store" or module.startswith("jobcast.store."):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "redis":
                allowed = node.module == "redis.exceptions" or (
                    node.module == "redis" and [a.name for a in node.names] == ["Redis"])
                if not allowed:
                    found.append(f"{module}: from {node.module} import ...")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "redis" for a in node.names):
                found.append(f"{module}: import redis")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "redis"):
                found.append(f"{module}:{node.lineno}: {ast.unparse(node.func)}(...)")
    assert not found, "Redis used outside the store package:\n" + "\n".join(found)
