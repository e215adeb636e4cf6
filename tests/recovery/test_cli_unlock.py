"""Each ``sergas-guard backup`` command unlocks the repository key once: the key
derivation (scrypt, ~0.1 s and 32 MiB by design) is the slow part of a small command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sergas_guard.cli import cli
from sergas_guard.recovery.crypto import KdfParams

PASSPHRASE = "unlock-me-once"


def test_every_command_derives_the_key_once(
    tmp_path: Path, source_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    env = {"SERGAS_GUARD_BACKUP_DIR": str(repo), "SERGAS_GUARD_BACKUP_PASSPHRASE": PASSPHRASE}
    runner = CliRunner()
    assert runner.invoke(cli, ["backup", "init"], env=env).exit_code == 0
    derivations = 0
    real_derive = KdfParams.derive

    def counting_derive(self: KdfParams, passphrase: str, salt: bytes) -> bytes:
        # A spy: the real derivation runs, only the calls are counted.
        nonlocal derivations
        derivations += 1
        return real_derive(self, passphrase, salt)

    monkeypatch.setattr(KdfParams, "derive", counting_derive)
    commands = [
        ["create", "--name", "n", "--source", str(source_tree), "--json"],
        ["create", "--name", "n", "--source", str(source_tree), "--type", "incremental"],
        ["list", "--json"],
        ["verify"],
        ["cleanup"],
        ["restore", "--destination", str(tmp_path / "out"), "--backup-id", "<first>"],
    ]
    first_id = ""
    for command in commands:
        command = [first_id if arg == "<first>" else arg for arg in command]
        derivations = 0
        result = runner.invoke(cli, ["backup", *command], env=env)
        assert result.exit_code == 0, (command, result.output)
        assert derivations == 1, command
        if command[0] == "create" and "--json" in command:
            first_id = json.loads(result.stdout)["backup"]["backup_id"]
