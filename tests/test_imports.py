"""Import hygiene: every module imports alone, packages import one way, and a capability
loads only what it uses.

* Each ``sergas_guard`` module is imported as if it were the first one: a few
  interpreters each import a batch of modules, forgetting every ``sergas_guard`` module
  between two (third-party modules stay loaded: their import order is not ours to test).
  An import cycle that only works in one order fails here.
* The static import graph of the subpackages (and top-level modules), from the source
  (``ast``; imports under ``if TYPE_CHECKING:`` do not run and are left out; imports
  inside functions run and count), has no cycle.
* ``import sergas_guard.health`` (and the breakers, the flags) loads neither the rate
  limiter nor ``limits`` nor redis-py.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sergas_guard

PACKAGE = Path(sergas_guard.__file__).parent
ROOT = PACKAGE.parent
BATCHES = 4  # two cores, shared: a few interpreters, each importing a quarter

# None: the rate-limit stores live beside the strategies (sergas_guard.ratelimit.stores),
# and sergas_guard.storage only re-exports them (issue 14, item 5). A new cycle is a
# layering mistake to fix, not an entry for this list.
KNOWN_CYCLES: list[set[str]] = []


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # importing it runs the command line
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


_IMPORT_EACH = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "sergas_guard" or m.startswith("sergas_guard.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-4)
print(json.dumps(failures))
"""


def test_every_module_imports_alone() -> None:
    names = module_names()
    assert len(names) > 100  # the walk found the package
    batches = [names[i::BATCHES] for i in range(BATCHES)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _IMPORT_EACH, json.dumps(batch)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in batches
    ]
    failures: dict[str, str] = {}
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        failures.update(json.loads(out))
    assert not failures, "\n\n".join(f"{name}:\n{text}" for name, text in failures.items())


def _unit(module: str) -> str:
    """The subpackage (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sergas_guard"


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Modules a file imports when it runs (not under ``if TYPE_CHECKING:``)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for part in node.body for inner in ast.walk(part))
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "sergas_guard":  # from sergas_guard import validation
                names.extend(f"sergas_guard.{alias.name}" for alias in node.names)
            else:
                names.append(node.module)
    return [name for name in names if name.startswith("sergas_guard.")]


def package_graph() -> dict[str, dict[str, str]]:
    """{unit: {unit it imports: one import that shows it}}."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        source = _unit(module)
        edges = graph.setdefault(source, {})
        for name in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            target = _unit(name)
            if target != source:
                edges.setdefault(target, f"{module} imports {name}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[set[str]]:
    """The strongly connected components of more than one unit (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for target in graph.get(unit, {}):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == unit:
                    break
            if len(component) > 1:
                found.append(component)

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return found


def test_cycles_finds_a_cycle_and_only_a_cycle() -> None:
    graph = {"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b": ""}, "b": {}}) == []


def test_subpackages_import_one_way() -> None:
    graph = package_graph()
    assert {"redis", "storage", "circuit_breaker", "health"} <= set(graph)
    found = cycles(graph)
    evidence = [
        f"{sorted(component)}: "
        + "; ".join(
            why for unit in sorted(component) for to, why in graph[unit].items() if to in component
        )
        for component in found
    ]
    assert sorted(map(sorted, found)) == sorted(map(sorted, KNOWN_CYCLES)), "\n".join(evidence)


# Capabilities that stand on the shared vocabulary and the Redis backend alone: none of
# them reaches the rate limiter (its stores included), a web edge, or another of them.
STANDALONE = {"circuit_breaker", "degradation", "health", "queueing", "recovery"}
ABOVE_THEM = {"ratelimit", "storage", "web", "asgi", "wsgi", "fastapi", "django", "cli"}


@pytest.mark.parametrize("capability", sorted(STANDALONE))
def test_a_capability_depends_on_the_redis_backend_not_on_the_rate_limiter(
    capability: str,
) -> None:
    edges = package_graph()[capability]
    reached = sorted(set(edges) & (STANDALONE | ABOVE_THEM))
    assert reached == [], [edges[unit] for unit in reached]


def test_only_users_import_the_storage_compatibility_package() -> None:
    # sergas_guard.storage re-exports sergas_guard.ratelimit.stores for users; the package
    # itself imports the stores from their home, so the old path can never close a cycle.
    graph = package_graph()
    importers = {unit: edges["storage"] for unit, edges in graph.items() if "storage" in edges}
    assert importers == {}
    assert set(graph["storage"]) == {"ratelimit"}


@pytest.mark.parametrize(
    "capability",
    ["sergas_guard.health", "sergas_guard.circuit_breaker", "sergas_guard.degradation"],
)
def test_a_capability_loads_no_rate_limiter_and_no_driver(capability: str) -> None:
    unwanted = ["sergas_guard.ratelimit", "sergas_guard.storage", "limits", "redis"]
    code = (
        f"import sys, json, {capability}\n"
        f"print(json.dumps([m for m in {unwanted!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
