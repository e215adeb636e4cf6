"""back_up_tree against a real repository: files vanishing or changing during the walk."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sergas_guard.recovery.filesystem import back_up_tree
from sergas_guard.recovery.repository import Repository


def test_files_vanishing_during_the_walk_are_left_out(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "d").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt"):
        (source / name).write_text(name)
    (source / "d" / "inner.txt").write_text("inner")
    repo = Repository.init(tmp_path / "repo", passphrase=None)

    def exclude(relative: str) -> bool:
        # another process deletes files and a directory while the walk runs
        if relative == "a.txt":
            (source / "b.txt").unlink()
            (source / "d" / "inner.txt").unlink()
            (source / "d").rmdir()
        return False

    with repo.lock(), repo.writer() as writer:
        entries, stats = back_up_tree(
            source, source=repo, sink=writer, parent=None, exclude=exclude
        )
    assert [e.path for e in entries] == ["a.txt", "c.txt"]
    assert stats.file_count == 2


def test_a_file_replaced_by_a_symlink_mid_walk_is_stored_as_the_link(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    (source / "b.txt").write_text("b")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the source")
    repo = Repository.init(tmp_path / "repo", passphrase=None)

    def exclude(relative: str) -> bool:
        if relative == "b.txt":  # listed as a file, then swapped for a link out
            (source / "b.txt").unlink()
            (source / "b.txt").symlink_to(secret)
        return False

    with repo.lock(), repo.writer() as writer:
        entries, _ = back_up_tree(source, source=repo, sink=writer, parent=None, exclude=exclude)
    by_path = {e.path: e for e in entries}
    assert by_path["b.txt"].type == "symlink"
    assert by_path["b.txt"].target == str(secret)
    secret_hash = hashlib.sha256(b"outside the source").hexdigest()
    assert all(e.sha256 != secret_hash for e in entries)
