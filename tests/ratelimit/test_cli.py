"""The ``sergas-guard ratelimit`` commands, through click and as a real process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from sergas_guard.cli import cli


@pytest.mark.parametrize(
    "strategy", ["token_bucket", "sliding_window", "fixed_window", "leaky_bucket", "sliding_log"]
)
def test_demo_shows_each_decision(strategy: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "ratelimit",
            "demo",
            "--strategy",
            strategy,
            "--limit",
            "3",
            "--requests",
            "6",
            "--interval",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("admitted") >= 1
    assert "rejected" in result.output
    # All six arrive at once: a leaky bucket with no burst admits one, the others three.
    expected = 1 if strategy == "leaky_bucket" else 3
    assert f"{expected} admitted, {6 - expected} rejected" in result.output


def test_demo_rejects_bad_options_with_a_clear_message() -> None:
    result = CliRunner().invoke(
        cli, ["ratelimit", "demo", "--strategy", "fixed_window", "--burst", "3"]
    )
    assert result.exit_code == 2
    assert "burst" in result.output


def test_load_test_counts_admissions_exactly() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "ratelimit",
            "load-test",
            "--clients",
            "10",
            "--requests",
            "30",
            "--rate",
            "5/hour",
            "--shared-key",
        ],
    )
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "300" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:3] == ["300", "5", "295"]


def test_console_script_runs_as_a_process() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sergas_guard",
            "ratelimit",
            "demo",
            "--requests",
            "4",
            "--limit",
            "2",
            "--interval",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "2 admitted, 2 rejected" in completed.stdout
