"""Streamed manifests through the manager, on real trees: what a restore reproduces
(owners, extended attributes, hard links, odd names), old-format repositories, damaged
segments, and hard links that try to leave the target."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tarfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.errors import IntegrityError, UnsafeRestoreError
from sergas_guard.recovery import BackupManager, BackupType, filesystem, manifest_file
from sergas_guard.recovery.maintenance import VERIFIED_DIR
from sergas_guard.recovery.repository import Repository
from tests.recovery.conftest import tree_state
from tests.recovery.fixtures import make_v1_repositories as v1

FIXTURE = Path(__file__).parent / "fixtures" / "v1_repositories.tar.gz"
ROOT_USER = os.geteuid() == 0


def full_state(root: Path) -> dict[str, tuple[object, ...]]:
    """:func:`tree_state` plus owners, user.* attributes and which paths share an inode
    (as the first path of their group, in sorted order)."""
    state = tree_state(root)
    first_of: dict[tuple[int, int], str] = {}
    out: dict[str, tuple[object, ...]] = {}
    for relpath in sorted(state):
        full = root / relpath
        st_ = full.lstat()
        link_group = None
        if stat.S_ISREG(st_.st_mode):
            link_group = first_of.setdefault((st_.st_dev, st_.st_ino), relpath)
        xattrs: tuple[tuple[str, bytes], ...] = ()
        if not stat.S_ISLNK(st_.st_mode):
            names = sorted(n for n in os.listxattr(full) if n.startswith("user."))
            xattrs = tuple((n, os.getxattr(full, n)) for n in names)
        owner = (st_.st_uid, st_.st_gid) if not stat.S_ISLNK(st_.st_mode) or ROOT_USER else None
        out[relpath] = (*state[relpath], xattrs, link_group, owner)
    return out


_NAME = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=8
).filter(lambda n: n not in (".", ".."))


@st.composite
def trees(draw: st.DrawFn) -> list[tuple[str, ...]]:
    """Instructions building a tree: files, dirs, hard links, xattrs, owners."""
    names = draw(st.lists(_NAME, min_size=1, max_size=8, unique=True))
    plan: list[tuple[str, ...]] = []
    for name in names:
        kind = draw(st.sampled_from(["file", "dir", "link", "xattr", "owned"]))
        plan.append((kind, name, draw(st.text(max_size=20))))
    return plan


def build(root: Path, plan: list[tuple[str, ...]]) -> None:
    root.mkdir()
    (root / "sub").mkdir()
    first = root / "sub" / "first.txt"
    first.write_text("shared by hard links")
    for kind, name, text in plan:
        path = root / name
        if kind == "dir":
            path.mkdir()
            (path / "inside").write_text(text)
            os.setxattr(path, "user.dir", text.encode())
        elif kind == "link":
            os.link(first, path)  # a hard link out of another directory
        else:
            path.write_text(text)
            if kind == "xattr":
                os.setxattr(path, "user.note", text.encode())
                os.setxattr(path, "user.empty", b"")
            elif kind == "owned" and ROOT_USER:
                os.chown(path, 4242, 4343)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=trees())
def test_a_restore_reproduces_names_owners_xattrs_and_hard_links(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[str, ...]]
) -> None:
    base = tmp_path_factory.mktemp("tree")
    build(base / "source", plan)
    manager = BackupManager(base / "repo")
    # Small segments, so even these trees span several.
    with mock.patch.object(manifest_file, "SEGMENT_ENTRIES", 3):
        backup = asyncio.run(manager.create_backup("n", base / "source"))
    links = sum(1 for kind, *_ in plan if kind == "link")
    repo = Repository.open(base / "repo")
    entries = list(repo.manifest_entries(backup.backup_id))
    assert sum(1 for e in entries if e["type"] == "hardlink") == links
    asyncio.run(manager.restore_backup(backup.backup_id, base / "restored"))
    assert full_state(base / "restored") == full_state(base / "source")


async def test_hard_links_are_stored_once_and_restored_as_links(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "a").mkdir(parents=True)
    (source / "a" / "big.bin").write_bytes(os.urandom(300_000))
    os.link(source / "a" / "big.bin", source / "again.bin")
    os.link(source / "a" / "big.bin", source / "zzz.bin")
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source)
    assert backup.file_count == 1
    assert backup.size_bytes == 300_000
    assert 300_000 <= backup.stored_bytes < 600_000  # the data once, not three times
    await manager.restore_backup(backup.backup_id, tmp_path / "out")
    inodes = {(tmp_path / "out" / p).stat().st_ino for p in ("a/big.bin", "again.bin", "zzz.bin")}
    assert len(inodes) == 1
    assert (tmp_path / "out" / "again.bin").stat().st_nlink == 3


@pytest.mark.skipif(not ROOT_USER, reason="setting another owner needs root")
async def test_owners_are_restored_only_when_asked_or_as_root(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "theirs.txt").write_text("x")
    os.chown(source / "theirs.txt", 4242, 4343)
    (source / "link").symlink_to("theirs.txt")
    os.chown(source / "link", 4242, 4343, follow_symlinks=False)
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source)
    await manager.restore_backup(backup.backup_id, tmp_path / "as-root")
    for name in ("theirs.txt", "link"):
        st_ = (tmp_path / "as-root" / name).lstat()
        assert (st_.st_uid, st_.st_gid) == (4242, 4343)
    await manager.restore_backup(backup.backup_id, tmp_path / "mine", owners=False)
    assert (tmp_path / "mine" / "theirs.txt").stat().st_uid == 0


# -- hard links that try to leave the target -----------------------------------------


async def _manifest_with(tmp_path: Path, extra: list[dict[str, object]]) -> BackupManager:
    source = tmp_path / "source"
    (source / "d").mkdir(parents=True)
    (source / "d" / "file.txt").write_text("data")
    (source / "sym").symlink_to("d/file.txt")
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source)
    repo = Repository.open(tmp_path / "repo")
    doc = repo.read_manifest(backup.backup_id)
    doc["entries"].extend(extra)
    repo.write_manifest(backup.backup_id, doc)
    return BackupManager(tmp_path / "repo")


@pytest.mark.parametrize(
    "target",
    ["../outside.txt", "/etc/passwd", "d", "sym", "sym/../d/file.txt", "later.txt", "nothing"],
)
async def test_a_hard_link_to_anything_but_a_restored_file_is_refused(
    tmp_path: Path, target: str
) -> None:
    (tmp_path / "outside.txt").write_text("not yours")
    hostile = [
        {"path": "evil", "type": "hardlink", "mode": 0o644, "mtime_ns": 0, "target": target},
        {
            "path": "later.txt",
            "type": "file",
            "mode": 0o644,
            "mtime_ns": 0,
            "chunks": [],
            "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        },
    ]
    manager = await _manifest_with(tmp_path, hostile)
    [backup] = manager.list_backups()
    with pytest.raises(UnsafeRestoreError):
        await manager.restore_backup(backup.backup_id, tmp_path / "out")
    assert not (tmp_path / "out" / "evil").exists()
    assert (tmp_path / "outside.txt").stat().st_nlink == 1


async def test_verify_flags_a_hard_link_leaving_the_target(tmp_path: Path) -> None:
    hostile = [{"path": "evil", "type": "hardlink", "mode": 0, "mtime_ns": 0, "target": "../x"}]
    manager = await _manifest_with(tmp_path, hostile)
    report = await manager.verify()
    assert not report.ok
    assert any("'../x'" in problem for problem in report.problems)


# -- change detection merges the parent's entries with the walk --------------------


async def test_an_incremental_reuses_every_unchanged_file_in_walk_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names whose walk order differs from plain string order ('-' < '/' < '0').
    monkeypatch.setattr(filesystem, "RACY_SLACK_NS", 20_000_000)
    source = tmp_path / "source"
    for relpath in ["a/x", "a/y/z", "a-b", "a0", "a.b/c", "b", "é/ü", "A"]:
        (source / relpath).parent.mkdir(parents=True, exist_ok=True)
        (source / relpath).write_text(relpath)
    manager = BackupManager(tmp_path / "repo")
    await asyncio.sleep(0.05)  # older than the slack: trusted when unchanged
    with mock.patch.object(manifest_file, "SEGMENT_ENTRIES", 2):
        await manager.create_backup("n", source)
        await asyncio.sleep(0.05)
        (source / "a-b").write_text("changed")
        second = await manager.create_backup("n", source, BackupType.INCREMENTAL)
    repo = Repository.open(tmp_path / "repo")
    stats = repo.read_manifest_header(second.backup_id).document["stats"]
    assert (stats["files_read"], stats["files_reused"]) == (1, 7)
    await manager.restore_backup(second.backup_id, tmp_path / "out")
    assert tree_state(tmp_path / "out") == tree_state(source)


# -- damaged segments through the manager -------------------------------------------


def _flip_first_segment(repo_path: Path, backup_id: str) -> None:
    path = repo_path / "snapshots" / backup_id
    data = bytearray(path.read_bytes())
    data[len(manifest_file.MAGIC) + 5] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_a_damaged_segment_is_listed_refused_and_reported(
    tmp_path: Path, source_tree: Path
) -> None:
    manager = BackupManager(tmp_path / "repo", passphrase=lambda: "pw")
    first = await manager.create_backup("n", source_tree)
    _flip_first_segment(tmp_path / "repo", first.backup_id)
    fresh = BackupManager(tmp_path / "repo", passphrase=lambda: "pw")
    # Listing reads headers only: the backup is still listed ...
    assert [b.backup_id for b in fresh.list_backups()] == [first.backup_id]
    # ... but its entries are never trusted.
    with pytest.raises(IntegrityError, match=first.backup_id):
        await fresh.restore_backup(first.backup_id, tmp_path / "out")
    report = await fresh.verify()
    assert report.affected[first.backup_id] == ("<manifest>",)
    # A new incremental gives up on the damaged parent and reads everything again.
    second = await fresh.create_backup("n", source_tree, BackupType.INCREMENTAL)
    await fresh.restore_backup(second.backup_id, tmp_path / "again")
    assert tree_state(tmp_path / "again") == tree_state(source_tree)


# -- the version-1 format, as the previous writer left it ------------------------------


@pytest.fixture(scope="module")
def v1_repositories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v1")
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(out, filter="data")
    return out


def _expected(root: Path, second: bool) -> dict[str, tuple[object, ...]]:
    v1.tree(root, second=False)
    if second:
        v1.tree(root, second=True)
    return tree_state(root)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.mark.parametrize("flavour", ["plain", "sealed"])
async def test_version_1_repositories_still_list_restore_verify_and_grow(
    v1_repositories: Path, tmp_path: Path, flavour: str
) -> None:
    repo = _copy(v1_repositories / flavour / "repo", tmp_path / "repo")
    passphrase = (lambda: v1.PASSPHRASE) if flavour == "sealed" else None
    manager = BackupManager(repo, passphrase=passphrase)
    full, incremental = manager.list_backups()
    assert (full.backup_type, incremental.backup_type) == (BackupType.FULL, BackupType.INCREMENTAL)
    assert (
        Repository.open(repo, passphrase=passphrase).read_manifest_header(full.backup_id).format
        == 1
    )
    await manager.restore_backup(full.backup_id, tmp_path / "full")
    await manager.restore_backup(incremental.backup_id, tmp_path / "incremental")
    assert tree_state(tmp_path / "full") == _expected(tmp_path / "expect-full", second=False)
    assert tree_state(tmp_path / "incremental") == _expected(tmp_path / "expect-inc", second=True)
    assert (await manager.verify()).ok
    # Change detection merges a format-1 parent's entries like any other.
    parent = manager._load(incremental.backup_id)
    lookup = filesystem._ParentFiles(parent)
    found = [lookup.get(p) for p in ["a.txt", "dir/b.bin", "dir/new.txt", "dir/sub/gone.txt"]]
    assert [e.path if e else None for e in found] == ["a.txt", "dir/b.bin", "dir/new.txt", None]
    # New (format-2) backups go into the old repository beside the old ones.
    source = tmp_path / "expect-inc"
    newer = await manager.create_backup("fixture", source, retention_days=None)
    assert len(manager.list_backups()) == 3
    await manager.restore_backup(newer.backup_id, tmp_path / "newer")
    assert tree_state(tmp_path / "newer") == tree_state(source)
    assert (await manager.verify()).ok


# -- verification records go with their backup ---------------------------------------


async def test_deleting_a_manifest_removes_its_verification_record(
    tmp_path: Path, source_tree: Path
) -> None:
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source_tree)
    await manager.verify()
    record = tmp_path / "repo" / VERIFIED_DIR / backup.backup_id
    assert record.exists()
    Repository.open(tmp_path / "repo").delete_manifest(backup.backup_id)
    assert not record.exists()
    assert manager.list_backups() == []
