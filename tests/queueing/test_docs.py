"""docs/queueing.md's examples run as written, in order."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "queueing.md"
TEXT = DOC.read_text()
#: Runnable examples; a block that cannot run here is fenced "```python fragment".
BLOCKS = re.findall(r"^```python\n(.*?)^```", TEXT, flags=re.DOTALL | re.MULTILINE)
FENCES = re.findall(r"^```(\S*.*)$", TEXT, flags=re.MULTILINE)


def test_every_python_block_runs_or_is_marked_a_fragment() -> None:
    openings = FENCES[::2]
    assert FENCES[1::2] == [""] * len(openings)  # every block is closed
    python = [fence for fence in openings if fence.startswith("python")]
    assert set(python) <= {"python", "python fragment"}
    assert python.count("python") == len(BLOCKS) >= 4


def test_the_first_block_holds_the_seed_calls() -> None:
    for call in (
        'QueueManager(name="request_queue", max_size=1000, max_workers=10, timeout=30.0)',
        "await queue.start()",
        'await queue.enqueue(process_request, priority=0, request_id="123")',
        "queue.get_metrics()",
    ):
        assert call in BLOCKS[0]


async def test_the_examples_run() -> None:
    namespace: dict[str, object] = {"__name__": "docs_queueing"}
    for number, source in enumerate(BLOCKS):
        code = compile(source, f"{DOC}:block{number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        outcome = eval(code, namespace)
        if inspect.iscoroutine(outcome):
            await outcome
    assert namespace["success"] is True
