"""What ``sergas-guard backup`` must never do: write outside a restore target because a
manifest says so, or print a passphrase, whatever it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.cli import cli
from sergas_guard.recovery.repository import Repository
from tests.recovery.conftest import tree_state
from tests.secret_leaks import leaks, stand_in

PASSPHRASE = "hostile-test-Passphrase-1"


def _run(repo: Path, *args: str, passphrase: str = PASSPHRASE) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        ["backup", *args],
        env={"SERGAS_GUARD_BACKUP_DIR": str(repo), "SERGAS_GUARD_BACKUP_PASSPHRASE": passphrase},
    )
    return result.exit_code, result.stdout, result.stderr


def test_a_manifest_naming_a_path_outside_the_target_is_refused(
    source_tree: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    code, out, _ = _run(repo, "create", "--name", "n", "--source", str(source_tree), "--json")
    assert code == 0
    honest = json.loads(out)["backup"]["backup_id"]
    # Someone who can write to the repository (and knows the passphrase) plants a manifest.
    opened = Repository.open(repo, passphrase=lambda: PASSPHRASE)
    manifest = opened.read_manifest(honest)
    victim = next(e for e in manifest["entries"] if e["type"] == "file")
    victim["path"] = "../../escaped.txt"
    manifest["backup_id"] = "backup_evil"
    opened.write_manifest("backup_evil", manifest)

    target = tmp_path / "restore" / "here"
    code, _, err = _run(repo, "restore", "--backup-id", "backup_evil", "--destination", str(target))
    assert code == 1
    assert "unsafe" in err
    assert not list(tmp_path.rglob("escaped.txt"))
    code, _, _ = _run(repo, "restore", "--backup-id", honest, "--destination", str(tmp_path / "ok"))
    assert code == 0
    assert tree_state(tmp_path / "ok") == tree_state(source_tree)


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encrypted repository holding one backup (made once: unlocking costs ~0.1 s)."""
    root = tmp_path_factory.mktemp("cli-secrets")
    (root / "data").mkdir()
    (root / "data" / "file.txt").write_text("content")
    code, _, err = _run(root / "repo", "create", "--name", "n", "--source", str(root / "data"))
    assert code == 0, err
    return root / "repo"


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    wrong=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=24
    ).filter(lambda s: "*" not in s and s != PASSPHRASE and any(c.isalnum() for c in s))
)
def test_no_wrong_passphrase_is_ever_printed(wrong: str, shared_repo: Path) -> None:
    texts: list[str] = []
    known: list[str] = []
    for passphrase in (wrong, stand_in(wrong)):
        code, out, err = _run(shared_repo, "list", "--json", passphrase=passphrase)
        assert code == 3
        (texts if passphrase == wrong else known).extend([out, err])
    assert leaks(wrong, texts, known) == []
    assert leaks(PASSPHRASE, texts, known) == []
