"""Owners and extended attributes on real files: what is read, the size bound, and which
namespaces a restore applies."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from sergas_guard.recovery import file_meta
from sergas_guard.recovery.file_meta import FileMeta, MetaApplier, read_xattrs
from sergas_guard.recovery.restore_target import RestoreTarget

ROOT_USER = os.geteuid() == 0


def test_xattrs_are_read_in_name_order_up_to_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    for name in ("user.c", "user.a", "user.b"):
        os.setxattr(path, name, name.encode() * 20)  # 6 + 120 bytes each
    assert [n for n, _ in read_xattrs(path)] == ["user.a", "user.b", "user.c"]
    assert read_xattrs(path)[0][1] == b"user.a" * 20
    monkeypatch.setattr(file_meta, "MAX_XATTR_BYTES", 300)
    assert [n for n, _ in read_xattrs(path)] == ["user.a", "user.b"]
    with open(path, "rb") as stream:  # from a descriptor, as the backup reads files
        assert [n for n, _ in read_xattrs(stream.fileno())] == ["user.a", "user.b"]


def test_xattrs_of_a_symlink_are_not_those_of_its_target(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("x")
    os.setxattr(tmp_path / "target", "user.t", b"1")
    (tmp_path / "link").symlink_to("target")
    assert read_xattrs(tmp_path / "link") == ()
    assert read_xattrs(tmp_path / "missing") == ()


@pytest.mark.skipif(not ROOT_USER, reason="trusted.* can only be set by root")
@pytest.mark.parametrize("privileged", [False, True])
def test_only_user_xattrs_are_applied_unprivileged(tmp_path: Path, privileged: bool) -> None:
    meta = FileMeta(xattrs=(("trusted.t", b"root only"), ("user.u", b"anyone")))
    applier = MetaApplier(owners=False, privileged=privileged)
    with RestoreTarget(tmp_path / "out", meta=applier) as target:
        target.directory("d", mode=0o755, mtime_ns=0, meta=meta)
        target.file("d/f", [b"data"], mode=0o644, mtime_ns=0, meta=meta)
        target.finish()
    for path in (tmp_path / "out" / "d", tmp_path / "out" / "d" / "f"):
        expected = {"user.u", "trusted.t"} if privileged else {"user.u"}
        assert set(os.listxattr(path)) == expected
        assert os.getxattr(path, "user.u") == b"anyone"


@pytest.mark.skipif(not ROOT_USER, reason="chown to another user needs root")
def test_owners_are_set_before_the_mode_so_set_id_bits_survive(tmp_path: Path) -> None:
    applier = MetaApplier(owners=True, privileged=True)
    with RestoreTarget(tmp_path / "out", meta=applier, special_bits=True) as target:
        target.file("tool", [b"#!/bin/sh\n"], mode=0o4755, mtime_ns=0, meta=FileMeta(4242, 4343))
        target.finish()
    st = (tmp_path / "out" / "tool").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (4242, 4343, 0o4755)


@pytest.mark.skipif(not ROOT_USER, reason="file capabilities can only be set by root")
@pytest.mark.parametrize("special_bits", [False, True])
def test_file_capabilities_need_special_bits_like_set_uid(
    tmp_path: Path, special_bits: bool
) -> None:
    # CAP_NET_BIND_SERVICE, permitted and effective (VFS_CAP_REVISION_2)
    capability = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
    meta = FileMeta(xattrs=(("security.capability", capability),))
    applier = MetaApplier(owners=False, privileged=True, special_bits=special_bits)
    with RestoreTarget(tmp_path / "out", meta=applier) as target:
        target.file("tool", [b"#!/bin/sh\n"], mode=0o755, mtime_ns=0, meta=meta)
        target.finish()
    names = os.listxattr(tmp_path / "out" / "tool")
    assert ("security.capability" in names) is special_bits
