"""``sergas_guard.redis`` is the bottom layer: it imports only the standard library, the
package's shared vocabulary and (optionally) hiredis, never a capability or redis-py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import sergas_guard.redis

ALLOWED_OURS = {"sergas_guard.errors", "sergas_guard.secrets", "sergas_guard.validation"}
ALLOWED_OTHERS = {"hiredis", "__future__"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "sergas_guard":  # from sergas_guard import validation
                names.update(f"sergas_guard.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def test_the_redis_backend_imports_nothing_above_it() -> None:
    folder = Path(sergas_guard.redis.__file__).parent
    wrong: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if name.startswith("sergas_guard.redis") or name in ALLOWED_OURS:
                continue
            if top in ALLOWED_OTHERS or top in sys.stdlib_module_names:
                continue
            wrong.setdefault(path.name, []).append(name)
    assert wrong == {}
