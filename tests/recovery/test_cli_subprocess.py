"""The seed's command lines, run as written in a real process of the command line.

``python scripts/reliability/example_disaster_recovery.py`` becomes ``sergas-guard
backup``; the entry point is ``sergas_guard.cli:main`` (the console script's target),
run from the checkout so that this tree's package is the one imported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sergas_guard.recovery.atomic import TEMP_PREFIX
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


def _complete_packs(repo: Path) -> list[Path]:
    data = repo / "data"
    if not data.exists():
        return []
    return [p for p in data.rglob("*") if p.is_file() and not p.name.startswith(TEMP_PREFIX)]


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_a_stopped_backup_is_resumed_not_restarted(tmp_path: Path, stop: signal.Signals) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for number in range(4):  # 48 MB: several 16 MiB packs
        (source / f"part{number}.bin").write_bytes(os.urandom(12_000_000))
    repo = tmp_path / "backups"
    env = {
        **os.environ,
        "SERGAS_GUARD_BACKUP_DIR": str(repo),
        "SERGAS_GUARD_BACKUP_PASSPHRASE": PASSPHRASE,
    }
    args = ["backup", "create", "--name", "big", "--source", str(source), "--json"]
    process = subprocess.Popen(
        [*ENTRY, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not _complete_packs(repo) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(stop)
    out, err = process.communicate(timeout=60)
    if stop == signal.SIGINT:
        # At once, not after the worker thread has finished the whole backup.
        assert process.returncode == 130, err
        assert b"interrupted" in err
        assert json.loads(out)["error"]["exit_code"] == 130
    else:
        assert process.returncode == -signal.SIGKILL
    listed = json.loads(sergas_guard(env, "backup", "list", "--json").stdout)
    assert listed["backups"] == []  # the stopped backup never appears half-made

    again = sergas_guard(env, *args)
    assert again.returncode == 0, again.stderr
    assert "re-uses" in again.stderr  # reported, and its packs re-used
    backup = json.loads(again.stdout)["backup"]
    assert backup["size_bytes"] == 48_000_000
    assert backup["stored_bytes"] <= backup["size_bytes"] - 16 * 1024 * 1024
    verified = sergas_guard(env, "backup", "verify", "--read-data")
    assert verified.returncode == 0, verified.stdout
    destination = tmp_path / "restored"
    restored = sergas_guard(
        env,
        "backup",
        "restore",
        "--backup-id",
        backup["backup_id"],
        "--destination",
        str(destination),
    )
    assert restored.returncode == 0, restored.stderr
    assert tree_state(destination) == tree_state(source)
