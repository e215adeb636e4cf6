"""Running a doc's python blocks as written, in order (shared by the docs tests).

A block that cannot run in a test is fenced "```python fragment" and is skipped.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

__all__ = ["DocBlocks"]


class DocBlocks:
    """The runnable python blocks of one markdown file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = path.read_text()
        self.blocks: list[str] = re.findall(
            r"^```python\n(.*?)^```", self.text, flags=re.DOTALL | re.MULTILINE
        )
        self.fences: list[str] = re.findall(r"^```(\S*.*)$", self.text, flags=re.MULTILINE)

    def check_fences(self, at_least: int) -> None:
        """Every block is closed, every python block is runnable or a marked fragment,
        and there are at least ``at_least`` runnable ones."""
        openings = self.fences[::2]
        assert self.fences[1::2] == [""] * len(openings)  # every block is closed
        python = [fence for fence in openings if fence.startswith("python")]
        assert set(python) <= {"python", "python fragment"}
        assert python.count("python") == len(self.blocks) >= at_least

    async def run(self, module_name: str) -> dict[str, object]:
        """Run every block in one namespace (top-level ``await`` allowed); the namespace."""
        namespace: dict[str, object] = {"__name__": module_name}
        for number, source in enumerate(self.blocks):
            code = compile(
                source, f"{self.path}:block{number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            outcome = eval(code, namespace)
            if inspect.iscoroutine(outcome):
                await outcome
        return namespace
