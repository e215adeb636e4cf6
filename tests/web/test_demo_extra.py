"""`sergas-guard demo` without the web extra says what to install instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_demo_without_uvicorn_names_the_extra() -> None:
    # A real process where importing uvicorn fails, as on an install without [web].
    script = textwrap.dedent(
        """
        import sys
        sys.modules["uvicorn"] = None  # makes `import uvicorn` raise ModuleNotFoundError
        from sergas_guard.cli import cli
        cli(["demo"])
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 1
    assert "sergas-guard[web]" in completed.stderr
    assert "Traceback" not in completed.stderr
