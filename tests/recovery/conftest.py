"""Fixtures of the recovery tests: real source trees on disk, and tree comparison."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

__all__ = ["tree_state"]


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a restore must reproduce of the tree at ``root``, by relative path:
    the type, permission bits, modification time and content (or link target)."""
    state: dict[str, tuple[object, ...]] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(directory, name)
            relative = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                state[relative] = ("symlink", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                state[relative] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                state[relative] = (
                    "file",
                    stat.S_IMODE(st.st_mode),
                    st.st_mtime_ns,
                    full.read_bytes(),
                )
    return state


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A small tree with nested, empty and read-only directories, an executable, a
    binary file, and symbolic links inside and pointing out of the tree."""
    root = tmp_path / "source"
    (root / "app" / "static").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "app" / "config.toml").write_text("[server]\nport = 8080\n")
    (root / "app" / "static" / "logo.bin").write_bytes(bytes(range(256)) * 64)
    script = root / "app" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (root / "app" / "secret.txt").write_text("only me")
    (root / "app" / "secret.txt").chmod(0o600)
    (root / "link-to-config").symlink_to("app/config.toml")
    (root / "outside").symlink_to("/etc/passwd")
    (root / "dangling").symlink_to("nowhere/at/all")
    os.utime(root / "app" / "config.toml", ns=(1_600_000_000_000_000_000,) * 2)
    return root
