"""The architecture, enforced: one-way layers, a light `import closedloop`, a pinned public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import closedloop

PACKAGE = Path(closedloop.__file__).parent

# What each layer may import from closedloop (besides itself and closedloop.errors).
ALLOWED = {
    "domain": set(),
    "storage": set(),
    "services": {"domain", "storage", "settings"},
    "server": {"services", "domain", "storage", "settings"},
    "cli": {"services", "domain", "storage", "settings", "server", "demo", "reports"},
    "demo": {"services", "domain", "storage", "settings"},
    "reports": {"services", "domain", "storage", "settings"},
}


def _closedloop_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "closedloop" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_only_import_downwards(layer: str) -> None:
    offences = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for imported in _closedloop_imports(path) - {layer, "errors", "__version__"}:
            if imported not in ALLOWED[layer]:
                offences.append(f"{path.relative_to(PACKAGE)} imports closedloop.{imported}")
    assert offences == []


def _module_imports(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that ``path`` imports, at any level (type-checking included)."""
    modules = {p.stem for p in (PACKAGE / package).glob("*.py")} - {"__init__"}
    prefix = f"closedloop.{package}"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module == prefix:
            names = [f"{prefix}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            rest = name.removeprefix(prefix + ".").split(".")[0]
            if name.startswith(prefix + ".") and rest in modules:
                found.add(rest)
    return found


def test_server_modules_import_without_a_cycle() -> None:
    """The routers use the context; only the app factory assembles them (nothing imports it)."""
    graph = {
        path.stem: _module_imports(path, "server") - {path.stem}
        for path in (PACKAGE / "server").glob("*.py")
        if path.stem != "__init__"
    }
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in trail:
                cycles.append(" -> ".join([*trail[trail.index(imported) :], imported]))
            else:
                visit(imported, [*trail, imported])

    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []
    assert [m for m, imported in graph.items() if "app" in imported] == []


def _import_graph(package: str) -> dict[str, set[str]]:
    """Every module of ``package`` (subpackages included, dotted names) and the modules of
    ``package`` it imports, at any level (lazy and type-checking imports included)."""
    root = PACKAGE / package
    modules = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
        for path in root.rglob("*.py")
    }
    prefix = f"closedloop.{package}."
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                rest = name.removeprefix(prefix)
                if name.startswith(prefix) and rest in modules and rest != module:
                    found.add(rest)
        graph[module] = found
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in trail:
                cycles.append(" -> ".join([*trail[trail.index(imported) :], imported]))
            elif imported not in done:
                visit(imported, [*trail, imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [module])
    return cycles


def test_domain_modules_import_without_a_cycle() -> None:
    """Statistics at the bottom (checks.stats imports no other domain module), then the checks."""
    graph = _import_graph("domain")
    assert _cycles(graph) == []
    assert graph["checks.stats"] == set()
    assert "checks.drift" not in graph["guardrails"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_importing_closedloop_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, closedloop; "
        "heavy = [m for m in ('sklearn', 'fastapi', 'pandas', 'sqlalchemy', 'scipy', 'pyarrow') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_public_api_is_exactly_this() -> None:
    assert sorted(closedloop.__all__) == [
        "Workspace",
        "__version__",
        "check_model",
        "open",
        "start_run",
    ]
    for name in closedloop.__all__:
        assert getattr(closedloop, name) is not None


def test_dir_lists_every_public_name_without_importing_it() -> None:
    code = (
        "import sys, closedloop; names = dir(closedloop); "
        "missing = [n for n in closedloop.__all__ if n not in names]; "
        "heavy = [m for m in ('pandas', 'sqlalchemy') if m in sys.modules]; "
        "print(missing, heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] []"
