"""The restore-safety invariant as a property over arbitrary entry sequences.

Paths are drawn from components that include ``..``, ``.``, empty ones, absolute paths
into the sentinel tree, and names that pre-existing symlinks and hard links occupy; the
entries come in any order, some file streams fail half-way. Whether the run finishes or
stops with UnsafeRestoreError:

* nothing outside the target changed or appeared;
* every file under the target holds a complete content written for its name (or the
  content it had before), never a partial one, and no temporary file is left;
* a run that finishes holds exactly the last content and link target of every entry;

whatever the batch size (files are published a batch at a time).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.errors import BackupError, IntegrityError, UnsafeRestoreError
from sergas_guard.recovery.restore_target import BATCH_FILES, RestoreTarget
from tests.recovery.test_restore_target import (
    MTIME,
    chunks_then_fail,
    make_scene,
    remove_tree,
    snapshot,
    temp_files,
)

OUT = "@OUT"  # replaced by the sentinel directory's absolute path
SAFE = ["a", "b", "l", "h", "a\\.."]
HOSTILE = ["..", ".", "", "x\x00"]
safe = st.lists(st.sampled_from(SAFE), min_size=1, max_size=4).map("/".join)
anything = st.lists(st.sampled_from(SAFE + HOSTILE), min_size=1, max_size=4).map("/".join)
climbing = st.builds(
    lambda down, ups, rest: "/".join([*down, *([".."] * ups), *rest]),
    st.lists(st.sampled_from(SAFE), max_size=2),
    st.integers(1, 3),
    st.lists(st.sampled_from([*SAFE, "outside", "secret"]), min_size=1, max_size=2),
)
hostile = st.one_of(
    climbing,
    anything,
    anything.map(lambda p: "/" + p),
    st.sampled_from([OUT, f"{OUT}/secret", f"{OUT}/new", f"{OUT}/sub/deep"]),
)
# Mostly well-formed paths, so that runs get far enough for conflicts (symlink then
# write, pre-existing links) and not only the first hostile path to matter.
paths = st.integers(0, 3).flatmap(lambda roll: hostile if roll == 0 else safe)
link_targets = st.sampled_from(
    ["../outside", "../../outside", OUT, f"{OUT}/secret", "a", ".", "..", "l/secret", "", "b"]
)
Op = tuple[str, str, object]
ops = st.one_of(
    st.tuples(st.just("dir"), paths, st.sampled_from([0o755, 0o555, 0o000, 0o700])),
    st.tuples(st.just("file"), paths, st.booleans()),
    st.tuples(st.just("symlink"), paths, link_targets),
)


def complete(index: int) -> bytes:
    return f"complete content of entry {index}".encode()


def prepare_overwrite(target: Path, outside: Path) -> dict[str, set[bytes]]:
    """A target left by someone else: symlinks and a hard link pointing outside."""
    target.mkdir()
    (target / "l").symlink_to(outside)
    (target / "b").symlink_to("../outside/secret")
    os.link(outside / "secret", target / "h")
    (target / "a").mkdir()
    (target / "a" / "l").symlink_to("../../outside/sub")
    return {"h": {(outside / "secret").read_bytes()}}


def apply(target: RestoreTarget, index: int, op: Op, out: str) -> bool:
    """Apply one entry; False when its chunk stream failed on purpose."""
    kind, path, arg = op
    path = path.replace(OUT, out)
    if kind == "dir":
        assert isinstance(arg, int)
        target.directory(path, mode=arg, mtime_ns=MTIME)
    elif kind == "file":
        chunks: Iterator[bytes] = (
            chunks_then_fail(b"partial ", b"content") if arg else iter([complete(index)])
        )
        try:
            target.file(path, chunks, mode=0o644, mtime_ns=MTIME)
        except IntegrityError:
            return False
    else:
        assert isinstance(arg, str)
        target.symlink(path, arg.replace(OUT, out))
    return True


@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(ops, max_size=10),
    overwrite=st.booleans(),
    batch_files=st.sampled_from([1, 2, BATCH_FILES]),
)
def test_no_entry_sequence_writes_outside_or_leaves_a_partial_file(
    entries: list[Op], overwrite: bool, batch_files: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(Path(tmp))
        out = str(scene.outside)
        allowed = prepare_overwrite(scene.target, scene.outside) if overwrite else {}
        before = scene.outside_state()
        last_file: dict[str, bytes] = {}
        last_link: dict[str, str] = {}
        target = RestoreTarget(scene.target, overwrite=overwrite, batch_files=batch_files)
        finished = False
        try:
            for index, op in enumerate(entries):
                if apply(target, index, op, out) and op[0] == "file":
                    allowed.setdefault(op[1], set()).add(complete(index))
                    last_file[op[1]] = complete(index)
                elif op[0] == "symlink":
                    last_link[op[1]] = str(op[2])
            target.finish()
            finished = True
        except UnsafeRestoreError:
            target.abort()
        except BackupError as exc:
            # Only an overwrite may meet a directory it must not replace.
            refused = str(exc)
            target.abort()
            assert overwrite, refused
            assert "existing directory" in refused
        try:
            assert scene.outside_state() == before
            assert temp_files(scene.target) == []
            restored = snapshot(scene.target)
            for key, info in restored.items():
                if info[0] == "file":
                    assert info[3] in allowed.get(key, set()), key
            if finished:
                for path, content in last_file.items():
                    assert (scene.target / path).read_bytes() == content
                for path, link_target in last_link.items():
                    assert os.readlink(scene.target / path) == link_target.replace(OUT, out)
        finally:
            remove_tree(scene.target)
