"""``sergas-guard backup`` through click's CliRunner, on real trees and repositories."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sergas_guard.cli import cli
from tests.recovery.conftest import tree_state

PASSPHRASE = "Tr0ub4dor&3-correct-horse"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo"


def run(repo: Path, *args: str, passphrase: str | None = PASSPHRASE, **env: str) -> Result:
    environment = {"SERGAS_GUARD_BACKUP_DIR": str(repo), "SERGAS_GUARD_BACKUP_PASSPHRASE": None}
    if passphrase is not None:
        environment["SERGAS_GUARD_BACKUP_PASSPHRASE"] = passphrase
    environment.update(env)
    return CliRunner().invoke(cli, ["backup", *args], env=environment)


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def no_leak(result: Result, secret: str = PASSPHRASE) -> None:
    assert secret not in result.output
    assert secret not in result.stderr


def create(repo: Path, source: Path, *extra: str) -> dict[str, Any]:
    result = run(repo, "create", "--name", "n", "--source", str(source), "--json", *extra)
    assert result.exit_code == 0, result.output
    backup: dict[str, Any] = as_json(result)["backup"]
    return backup


def test_seed_lines_back_up_list_restore_and_clean_up(repo: Path, source_tree: Path) -> None:
    created = run(
        repo,
        "create-backup",
        "--name=emergency",
        f"--source={source_tree}",
        "--type=full",
        "--retention=30",
    )
    assert created.exit_code == 0, created.output
    assert "(full)" in created.stdout

    listed = run(repo, "list-backups")
    assert listed.exit_code == 0, listed.output
    assert "emergency" in listed.stdout
    assert "full" in listed.stdout
    backup_id = as_json(run(repo, "list", "--json"))["backups"][0]["backup_id"]
    assert backup_id in listed.stdout

    destination = repo.parent / "restore"
    restored = run(repo, "restore", f"--backup-id={backup_id}", f"--destination={destination}")
    assert restored.exit_code == 0, restored.output
    assert tree_state(destination) == tree_state(source_tree)

    cleaned = run(repo, "cleanup")
    assert cleaned.exit_code == 0, cleaned.output
    assert "dry run" in cleaned.stdout
    assert "keep" in cleaned.stdout
    assert "retention_days=30" in cleaned.stdout
    assert len(as_json(run(repo, "list", "--json"))["backups"]) == 1

    drill = run(repo, "test-recovery")
    assert drill.exit_code == 5
    assert "not available yet" in drill.stderr
    drill_json = run(repo, "test-recovery", "--json")
    assert drill_json.exit_code == 5
    assert as_json(drill_json)["error"]["exit_code"] == 5
    for result in (created, listed, restored, cleaned, drill):
        no_leak(result)


def test_json_shapes(repo: Path, source_tree: Path) -> None:
    init = run(repo, "init", "--json", "--compression-level", "5")
    assert init.exit_code == 0, init.output
    assert as_json(init) == {"repository": str(repo), "encrypted": True, "compression_level": 5}

    first = run(repo, "create", "--name", "a", "--source", str(source_tree), "--json")
    created = as_json(first)
    assert set(created) == {"backup", "elapsed_seconds", "bytes_per_second"}
    backup = created["backup"]
    assert set(backup) == {
        "backup_id",
        "name",
        "type",
        "strategy",
        "source",
        "created_at",
        "completed_at",
        "parent_id",
        "chain_root_id",
        "retention_days",
        "size_bytes",
        "file_count",
        "stored_bytes",
        "status",
        "verified_at",
    }
    assert backup["verified_at"] is None
    assert (backup["type"], backup["strategy"], backup["status"]) == (
        "full",
        "filesystem",
        "completed",
    )
    assert backup["file_count"] == 4
    assert backup["retention_days"] == 30
    second = create(repo, source_tree, "--type", "incremental", "--retention-days", "7")
    assert second["parent_id"] == backup["backup_id"]
    assert second["stored_bytes"] == 0

    listed = as_json(run(repo, "list", "--json"))
    assert [b["backup_id"] for b in listed["backups"]] == [
        backup["backup_id"],
        second["backup_id"],
    ]
    only_full = as_json(run(repo, "list", "--type", "full", "--json"))["backups"]
    assert [b["backup_id"] for b in only_full] == [backup["backup_id"]]

    verified = as_json(run(repo, "verify", "--read-data-subset", "50%", "--json"))
    assert verified["ok"] is True
    assert verified["problems"] == []
    assert set(verified) == {
        "ok",
        "problems",
        "packs_checked",
        "packs_read",
        "chunks_read",
        "damaged_chunks",
        "affected",
    }

    restored = as_json(
        run(
            repo,
            "restore",
            "--backup-id",
            second["backup_id"],
            "--destination",
            str(repo.parent / "r"),
            "--json",
        )
    )
    assert restored["restored"] is True
    assert restored["backup"]["backup_id"] == second["backup_id"]

    cleanup = as_json(run(repo, "cleanup", "--json"))
    assert cleanup["dry_run"] is True
    assert cleanup["removed"] == []
    assert cleanup["garbage"] is None
    assert all(d["keep"] and d["reasons"] for d in cleanup["decisions"])


def test_wrong_passphrase_is_exit_3_and_never_printed(repo: Path, source_tree: Path) -> None:
    backup = create(repo, source_tree)
    wrong = "N0t-the-Right-0ne!"
    for args in (
        ("list",),
        ("list", "--json"),
        ("verify", "--read-data"),
        ("create", "--name", "x", "--source", str(source_tree)),
        ("restore", "--backup-id", backup["backup_id"], "--destination", str(repo.parent / "x")),
        ("cleanup", "--confirm", "--keep-last", "1"),
    ):
        result = run(repo, *args, passphrase=wrong)
        assert result.exit_code == 3, (args, result.output)
        assert "wrong passphrase" in result.stderr
        no_leak(result, wrong)
        no_leak(result)
    as_error = as_json(run(repo, "list", "--json", passphrase=wrong))
    assert as_error["error"]["exit_code"] == 3
    assert not (repo.parent / "x").exists()
    assert len(as_json(run(repo, "list", "--json"))["backups"]) == 1


def test_missing_passphrase_and_missing_repository_are_exit_3(
    repo: Path, source_tree: Path
) -> None:
    nothing = run(repo, "create", "--name", "x", "--source", str(source_tree), passphrase=None)
    assert nothing.exit_code == 3
    assert "no passphrase" in nothing.stderr
    assert not repo.exists()
    assert run(repo, "list", passphrase=None).exit_code == 3
    assert "no backup repository" in run(repo, "verify").stderr
    create(repo, source_tree)
    locked = run(repo, "list", passphrase=None)
    assert locked.exit_code == 3
    assert "passphrase is needed" in locked.stderr
    assert run(repo, "init").exit_code == 3  # a repository is there already


def test_passphrase_from_a_file_or_a_named_variable(
    repo: Path, source_tree: Path, tmp_path: Path
) -> None:
    secret_file = tmp_path / "pass"
    secret_file.write_text(PASSPHRASE + "\n")
    init = run(repo, "init", "--passphrase-file", str(secret_file), passphrase=None)
    assert init.exit_code == 0, init.output
    by_var = run(
        repo,
        "create",
        "--name",
        "x",
        "--source",
        str(source_tree),
        "--passphrase-env",
        "MY_BACKUP_KEY",
        passphrase=None,
        MY_BACKUP_KEY=PASSPHRASE,
    )
    assert by_var.exit_code == 0, by_var.output
    assert run(repo, "list").exit_code == 0
    both = run(repo, "list", "--passphrase-file", str(secret_file), "--passphrase-env", "X")
    assert both.exit_code == 2
    unset = run(repo, "list", "--passphrase-env", "UNSET_VARIABLE_X", passphrase=None)
    assert unset.exit_code == 3
    assert "UNSET_VARIABLE_X" in unset.stderr


def test_unencrypted_repository_needs_an_explicit_init(repo: Path, source_tree: Path) -> None:
    assert run(repo, "init", passphrase=None).exit_code == 3
    assert run(repo, "init", "--no-encryption").exit_code == 3  # with a passphrase set
    init = run(repo, "init", "--no-encryption", "--json", passphrase=None)
    assert as_json(init)["encrypted"] is False
    result = run(repo, "create", "--name", "x", "--source", str(source_tree), passphrase=None)
    assert result.exit_code == 0, result.output
    assert run(repo, "key", "--new-passphrase-env", "K", passphrase=None, K="k").exit_code == 3


def test_restore_errors_have_their_exit_codes(repo: Path, source_tree: Path) -> None:
    backup = create(repo, source_tree)
    target = repo.parent / "target"
    missing = run(repo, "restore", "--backup-id", "backup_nope", "--destination", str(target))
    assert missing.exit_code == 4
    too_early = run(repo, "restore", "--at", "2001-01-01T00:00:00Z", "--destination", str(target))
    assert too_early.exit_code == 4
    assert not target.exists()
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    occupied = run(
        repo, "restore", "--backup-id", backup["backup_id"], "--destination", str(target)
    )
    assert occupied.exit_code == 1
    assert (target / "keep.txt").read_text() == "mine"
    overwrite = run(
        repo,
        "restore",
        "--backup-id",
        backup["backup_id"],
        "--destination",
        str(target),
        "--overwrite",
    )
    assert overwrite.exit_code == 0, overwrite.output
    assert (target / "app" / "config.toml").read_text() == "[server]\nport = 8080\n"
    both = run(repo, "restore", "--backup-id", "x", "--at", "2030-01-01", "--destination", "y")
    assert both.exit_code == 2
    assert run(repo, "restore", "--at", "yesterday", "--destination", "y").exit_code == 2


def test_restore_at_a_point_in_time_picks_the_newest_backup_not_after_it(
    repo: Path, source_tree: Path
) -> None:
    first = create(repo, source_tree)
    (source_tree / "app" / "config.toml").write_text("changed\n")
    second = create(repo, source_tree, "--type", "incremental")
    target = repo.parent / "at"
    result = run(
        repo, "restore", "--at", first["completed_at"], "--destination", str(target), "--json"
    )
    assert result.exit_code == 0, result.output
    assert as_json(result)["backup"]["backup_id"] == first["backup_id"]
    assert (target / "app" / "config.toml").read_text() == "[server]\nport = 8080\n"
    latest = repo.parent / "latest"
    result = run(repo, "restore", "--at", "2999-01-01T00:00", "--destination", str(latest))
    assert result.exit_code == 0
    assert second["backup_id"] in result.stdout
    assert (latest / "app" / "config.toml").read_text() == "changed\n"


def test_verify_reports_a_flipped_byte_with_the_backups_it_affects(
    repo: Path, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(300_000))
    backup = create(repo, source)
    packs = [p for p in (repo / "data").rglob("*") if p.is_file()]
    assert len(packs) == 1
    content = bytearray(packs[0].read_bytes())
    content[len(content) // 2] ^= 0x01
    packs[0].write_bytes(bytes(content))

    assert run(repo, "verify").exit_code == 0  # the structure is intact
    damaged = run(repo, "verify", "--read-data", "--json")
    assert damaged.exit_code == 1
    report = as_json(damaged)
    assert report["ok"] is False
    assert report["damaged_chunks"]
    assert report["affected"] == {backup["backup_id"]: ["big.bin"]}
    human = run(repo, "verify", "--read-data")
    assert human.exit_code == 1
    assert "big.bin" in human.stdout
    refused = run(
        repo, "restore", "--backup-id", backup["backup_id"], "--destination", str(tmp_path / "r")
    )
    assert refused.exit_code == 1
    assert "integrity" in refused.stderr.lower()
    assert not (tmp_path / "r" / "big.bin").exists()
    assert run(repo, "verify", "--read-data", "--read-data-subset", "5%").exit_code == 2
    assert run(repo, "verify", "--read-data-subset", "0%").exit_code == 2
    assert run(repo, "verify", "--read-data-subset", "ten").exit_code == 2


def test_cleanup_is_a_dry_run_until_confirmed_and_keeps_chains(
    repo: Path, source_tree: Path
) -> None:
    full = create(repo, source_tree)
    (source_tree / "new.txt").write_text("more")
    incremental = create(repo, source_tree, "--type", "incremental")
    (source_tree / "newer.txt").write_text("more still")
    last = create(repo, source_tree, "--type", "full")
    policy = ("--keep-last", "1", "--ignore-retention-days")

    dry = run(repo, "cleanup", *policy)
    assert dry.exit_code == 0, dry.output
    assert "would be removed; run with --confirm" in dry.stdout
    assert len(as_json(run(repo, "list", "--json"))["backups"]) == 3

    confirmed = as_json(run(repo, "cleanup", *policy, "--confirm", "--json"))
    assert confirmed["dry_run"] is False
    assert sorted(confirmed["removed"]) == sorted([full["backup_id"], incremental["backup_id"]])
    assert confirmed["garbage"]["bytes_freed"] >= 0
    left = as_json(run(repo, "list", "--json"))["backups"]
    assert [b["backup_id"] for b in left] == [last["backup_id"]]
    assert run(repo, "verify", "--read-data").exit_code == 0


def test_cleanup_keeps_the_parent_of_a_kept_incremental(repo: Path, source_tree: Path) -> None:
    full = create(repo, source_tree)
    (source_tree / "new.txt").write_text("more")
    create(repo, source_tree, "--type", "incremental")
    report = as_json(
        run(repo, "cleanup", "--keep-last", "1", "--ignore-retention-days", "--confirm", "--json")
    )
    assert report["removed"] == []
    decision = next(d for d in report["decisions"] if d["backup_id"] == full["backup_id"])
    assert decision["keep"]
    assert any("parent" in r for r in decision["reasons"])


def test_cleanup_options_are_checked(repo: Path, source_tree: Path) -> None:
    create(repo, source_tree)
    assert run(repo, "cleanup", "--keep-within", "30x").exit_code == 2
    assert run(repo, "cleanup", "--keep-daily", "-1").exit_code == 2
    within = run(repo, "cleanup", "--keep-within", "1y6m2w3d12h", "--json")
    assert within.exit_code == 0, within.output


def test_key_changes_the_passphrase(repo: Path, source_tree: Path, tmp_path: Path) -> None:
    create(repo, source_tree)
    new = "a-brand-new-Passphrase-42"
    changed = run(repo, "key", "--new-passphrase-env", "NEW_KEY", "--json", NEW_KEY=new)
    assert changed.exit_code == 0, changed.output
    assert as_json(changed) == {"repository": str(repo), "passphrase_changed": True}
    no_leak(changed, new)
    assert run(repo, "list").exit_code == 3
    assert run(repo, "list", passphrase=new).exit_code == 0
    assert run(repo, "key", passphrase=new).exit_code == 2


def test_sqlite_strategy_through_the_command_line(repo: Path, tmp_path: Path) -> None:
    import sqlite3

    database = tmp_path / "app.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t (x int)")
        connection.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    connection.close()
    backup = create(repo, database, "--strategy", "sqlite")
    assert backup["strategy"] == "sqlite"
    target = tmp_path / "restored.sqlite"
    result = run(repo, "restore", "--backup-id", backup["backup_id"], "--destination", str(target))
    assert result.exit_code == 0, result.output
    restored = sqlite3.connect(target)
    assert restored.execute("SELECT count(*) FROM t").fetchone() == (100,)
    restored.close()
