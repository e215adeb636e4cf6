"""docs/queueing.md's examples run as written, in order."""

from __future__ import annotations

from pathlib import Path

from tests.doc_blocks import DocBlocks

DOC = DocBlocks(Path(__file__).resolve().parents[2] / "docs" / "queueing.md")
TEXT = DOC.text
BLOCKS = DOC.blocks


def test_every_python_block_runs_or_is_marked_a_fragment() -> None:
    DOC.check_fences(at_least=4)


def test_the_first_block_holds_the_seed_calls() -> None:
    for call in (
        'QueueManager(name="request_queue", max_size=1000, max_workers=10, timeout=30.0)',
        "await queue.start()",
        'await queue.enqueue(process_request, priority=0, request_id="123")',
        "queue.get_metrics()",
    ):
        assert call in BLOCKS[0]


async def test_the_examples_run() -> None:
    namespace = await DOC.run("docs_queueing")
    assert namespace["success"] is True
