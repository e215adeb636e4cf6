"""The seed's command lines, run as written in a real process of the command line.

``python scripts/reliability/example_disaster_recovery.py`` becomes ``sergas-guard
backup``; the entry point is ``sergas_guard.cli:main`` (the console script's target),
run from the checkout so that this tree's package is the one imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.recovery.conftest import tree_state

ROOT = Path(__file__).resolve().parents[2]
ENTRY = [sys.executable, "-c", "from sergas_guard.cli import main; main()"]
PASSPHRASE = "s3cret-Seed-Passphrase"


def sergas_guard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENTRY, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_seed_command_lines_in_a_real_process(source_tree: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SERGAS_GUARD_BACKUP_DIR": str(tmp_path / "backups"),
        "SERGAS_GUARD_BACKUP_PASSPHRASE": PASSPHRASE,
    }
    created = sergas_guard(
        env,
        "backup",
        "create-backup",
        "--name=emergency",
        f"--source={source_tree}",
        "--type=full",
        "--retention=30",
    )
    assert created.returncode == 0, created.stderr
    listed = sergas_guard(env, "backup", "list-backups")
    assert listed.returncode == 0, listed.stderr
    assert "emergency" in listed.stdout

    shown = json.loads(sergas_guard(env, "backup", "list-backups", "--json").stdout)
    backup_id = shown["backups"][0]["backup_id"]
    assert shown["backups"][0]["type"] == "full"
    assert shown["backups"][0]["retention_days"] == 30
    destination = tmp_path / "restore"
    restored = sergas_guard(
        env, "backup", "restore", f"--backup-id={backup_id}", f"--destination={destination}"
    )
    assert restored.returncode == 0, restored.stderr
    assert tree_state(destination) == tree_state(source_tree)

    drill = sergas_guard(env, "backup", "test-recovery")
    assert drill.returncode == 5
    assert "not available yet" in drill.stderr
    cleaned = sergas_guard(env, "backup", "cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "0 would be removed" in cleaned.stdout

    wrong = "Wr0ng-Passphrase-Here"
    refused = sergas_guard(
        {**env, "SERGAS_GUARD_BACKUP_PASSPHRASE": wrong}, "backup", "list-backups", "--json"
    )
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["error"]["exit_code"] == 3
    assert "wrong passphrase" in refused.stderr
    for result in (created, listed, restored, drill, cleaned, refused):
        for secret in (PASSPHRASE, wrong):
            assert secret not in result.stdout
            assert secret not in result.stderr
