"""``sergas_guard.storage`` keeps the import paths users know after the stores moved
beside the strategies (``sergas_guard.ratelimit.stores``): every path gives the very
same object, the package and each submodule re-export all of their new home's public
names, and nothing in the new home imports the old one."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import sergas_guard

PACKAGE = Path(sergas_guard.__file__).parent
SUBMODULES = sorted(
    path.stem for path in (PACKAGE / "ratelimit" / "stores").glob("*.py") if path.stem != "__init__"
)


def test_every_store_module_has_its_old_path() -> None:
    old = sorted(p.stem for p in (PACKAGE / "storage").glob("*.py") if p.stem != "__init__")
    assert old == SUBMODULES


@pytest.mark.parametrize("name", ["", *SUBMODULES])
def test_old_path_reexports_the_new_home(name: str) -> None:
    suffix = f".{name}" if name else ""
    new = importlib.import_module(f"sergas_guard.ratelimit.stores{suffix}")
    old = importlib.import_module(f"sergas_guard.storage{suffix}")
    assert old.__all__ == new.__all__
    for public in new.__all__:
        assert getattr(old, public) is getattr(new, public), public


def test_the_lazy_names_stay_lazy() -> None:
    # Importing the storage package (memory://) must not load redis-py.
    code = "import sys, sergas_guard.storage; print('redis' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_new_home_never_imports_the_old_path() -> None:
    offenders = []
    for path in sorted((PACKAGE / "ratelimit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module == "sergas_guard":
                    names += [f"sergas_guard.{alias.name}" for alias in node.names]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n == "sergas_guard.storage" or n.startswith("sergas_guard.storage.")
            ]
    assert offenders == []
