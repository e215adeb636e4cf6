"""The command line without an optional extra: its command explains, the others work.

A missing package is injected with ``sys.modules[name] = None`` (Python then raises
ModuleNotFoundError for it, as when it is not installed): uninstalling packages from
the test environment is not something a test may do.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_WITHOUT = (
    "import sys; sys.modules['{package}'] = None; "
    "from sergas_guard.cli import main; sys.argv = ['sergas-guard', *sys.argv[1:]]; main()"
)


def _run(package: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT.format(package=package), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("package", ["cryptography", "zstandard", "pyfastcdc"])
def test_backup_without_its_extra_says_what_to_install(package: str) -> None:
    done = _run(package, "backup", "list", "--repo", "/nonexistent")
    assert done.returncode == 3
    assert f"needs the optional package {package!r}" in done.stderr
    assert "pip install 'sergas-guard[backup]'" in done.stderr


def test_other_commands_work_without_the_backup_extra() -> None:
    done = _run("cryptography", "ratelimit", "demo", "--strategy", "fixed_window")
    assert done.returncode == 0, done.stderr
    assert "admitted" in done.stdout
    listed = _run("cryptography", "--help")
    assert listed.returncode == 0
    assert "backup" in listed.stdout
