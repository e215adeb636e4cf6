"""``sergas-guard backup list``: when each backup was verified, and the backups whose
manifest cannot be read, in text and ``--json``."""

from __future__ import annotations

from pathlib import Path

from tests.recovery.test_cli import as_json, create, run


def test_list_shows_verification_times_and_unreadable_backups(
    tmp_path: Path, source_tree: Path
) -> None:
    repo = tmp_path / "repo"
    first = create(repo, source_tree)["backup_id"]
    listed = as_json(run(repo, "list", "--json"))
    assert [b["verified_at"] for b in listed["backups"]] == [None]
    assert listed["unreadable"] == []
    assert "never" in run(repo, "list").stdout

    assert run(repo, "verify").exit_code == 0
    second = create(repo, source_tree)["backup_id"]
    listed = as_json(run(repo, "list", "--json"))
    verified = {b["backup_id"]: b["verified_at"] for b in listed["backups"]}
    assert verified[first] is not None
    assert verified[second] is None

    manifest = repo / "snapshots" / second
    manifest.write_bytes(manifest.read_bytes()[:-3])  # truncated: no trailer
    result = run(repo, "list", "--json")
    assert result.exit_code == 0, result.output
    listed = as_json(result)
    assert [b["backup_id"] for b in listed["backups"]] == [first]
    [unreadable] = listed["unreadable"]
    assert unreadable["backup_id"] == second
    assert "damaged" in unreadable["problem"]
    text = run(repo, "list").stdout
    assert "1 unreadable backups" in text
    assert second in text
