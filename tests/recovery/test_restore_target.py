"""RestoreTarget on real directories: what it restores, and what no entry can make it do.

Every hostile case keeps a sentinel directory next to the target and checks, byte for
byte, that nothing outside the target changed and no temporary file is left behind.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sergas_guard.errors import BackupError, IntegrityError, UnsafeRestoreError
from sergas_guard.recovery.restore_target import TEMP_PREFIX, RestoreTarget, split_relpath

MTIME = 1_600_000_000_123_456_789


# -- helpers shared with the property tests -----------------------------------------------

Snapshot = dict[str, tuple[object, ...]]


def snapshot(top: Path, *, skip: Path | None = None) -> Snapshot:
    """Everything under ``top`` (links not followed), except ``skip`` and its contents."""
    seen: Snapshot = {}

    def visit(path: Path) -> None:
        if path == skip:
            return
        st = os.lstat(path)
        key = str(path.relative_to(top))
        if stat.S_ISLNK(st.st_mode):
            seen[key] = ("link", os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            seen[key] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, path.read_bytes())
        elif stat.S_ISDIR(st.st_mode):
            seen[key] = ("dir", stat.S_IMODE(st.st_mode))
            # A restored directory may be mode 000; make it listable (restored below).
            os.chmod(path, st.st_mode | 0o700)
            try:
                for child in sorted(os.listdir(path)):
                    visit(path / child)
            finally:
                os.chmod(path, stat.S_IMODE(st.st_mode))
        else:
            seen[key] = ("other", st.st_mode)

    visit(top)
    return seen


def remove_tree(top: Path) -> None:
    """rmtree that also works when a restored directory is read-only (non-root runs)."""
    for dirpath, dirnames, _ in os.walk(top):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)
    shutil.rmtree(top)


def temp_files(root: Path) -> list[str]:
    return [key for key in snapshot(root) if os.path.basename(key).startswith(TEMP_PREFIX)]


@dataclass
class Scene:
    """A target next to an ``outside`` sentinel tree the restore must never touch."""

    base: Path
    target: Path
    outside: Path

    def outside_state(self) -> Snapshot:
        return snapshot(self.base, skip=self.target)


def make_scene(base: Path) -> Scene:
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not touch")
    (outside / "sub").mkdir()
    (outside / "sub" / "deep").write_bytes(b"deep")
    return Scene(base=base, target=base / "target", outside=outside)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    built = make_scene(tmp_path)
    yield built
    if built.target.exists():
        remove_tree(built.target)


def chunks_then_fail(*parts: bytes) -> Iterator[bytes]:
    yield from parts
    raise IntegrityError("chunk 00ff failed its MAC")


# -- what a restore does ----------------------------------------------------------------------


def test_restores_files_directories_and_symlinks_with_modes_and_times(scene: Scene) -> None:
    with RestoreTarget(scene.target) as target:
        target.file("top.txt", [b"hello ", b"world"], mode=0o640, mtime_ns=MTIME)
        target.file("a/b/c.bin", iter([b"\x00" * 10, b"x"]), mode=0o755, mtime_ns=MTIME + 1)
        target.file("a/empty", [], mode=0o600, mtime_ns=MTIME)
        target.symlink("a/link", "b/c.bin", mtime_ns=MTIME + 2)
        target.symlink("abs", str(scene.outside / "secret"))
        target.directory("a", mode=0o750, mtime_ns=MTIME + 3)
        target.directory("a/b", mode=0o700, mtime_ns=MTIME + 4)
        target.directory("emptydir", mode=0o711, mtime_ns=MTIME + 5)
        target.finish()

    root = scene.target
    assert (root / "top.txt").read_bytes() == b"hello world"
    assert stat.S_IMODE((root / "top.txt").stat().st_mode) == 0o640
    assert (root / "top.txt").stat().st_mtime_ns == MTIME
    assert (root / "a/b/c.bin").read_bytes() == b"\x00" * 10 + b"x"
    assert stat.S_IMODE((root / "a/b/c.bin").stat().st_mode) == 0o755
    assert (root / "a/empty").read_bytes() == b""
    assert os.readlink(root / "a/link") == "b/c.bin"
    assert os.lstat(root / "a/link").st_mtime_ns == MTIME + 2
    assert os.readlink(root / "abs") == str(scene.outside / "secret")
    # Directory times hold although entries were created in them afterwards.
    assert os.stat(root / "a").st_mtime_ns == MTIME + 3
    assert stat.S_IMODE(os.stat(root / "a").st_mode) == 0o750
    assert os.stat(root / "a/b").st_mtime_ns == MTIME + 4
    assert stat.S_IMODE(os.stat(root / "emptydir").st_mode) == 0o711
    assert temp_files(root) == []


def test_a_read_only_directory_does_not_block_its_children(scene: Scene) -> None:
    target = RestoreTarget(scene.target)
    target.directory("ro", mode=0o555, mtime_ns=MTIME)
    target.directory("ro/inner", mode=0o500, mtime_ns=MTIME)
    target.file("ro/inner/f", [b"data"], mode=0o444, mtime_ns=MTIME)
    target.symlink("ro/l", "inner/f")
    target.finish()
    assert stat.S_IMODE(os.stat(scene.target / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(scene.target / "ro/inner").st_mode) == 0o500
    assert (scene.target / "ro/inner/f").read_bytes() == b"data"


NOBODY = 65534


def run_as_nobody(work: Callable[[], None]) -> str:
    """Run ``work`` in a forked child that dropped root (the interpreter is already
    loaded, so nothing needs to be readable by ``nobody``); returns its error or ''."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        status = 1
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            work()
            status = 0
        except BaseException as exc:
            os.write(writer, repr(exc).encode())
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        error = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return error or ("" if os.waitstatus_to_exitcode(status) == 0 else "child failed")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_read_only_directories_as_an_unprivileged_user(tmp_path: Path) -> None:
    """Root ignores modes, so the read-only cases run again as ``nobody``: a new
    read-only directory, and one left by an earlier restore (overwrite)."""
    os.chmod(tmp_path, 0o755)
    target = tmp_path / "target"
    (target / "old").mkdir(parents=True)
    (target / "old" / "f").write_bytes(b"old")
    os.chmod(target / "old", 0o555)
    for path in (target, target / "old", target / "old" / "f"):
        os.chown(path, NOBODY, NOBODY)

    def restore() -> None:
        first = RestoreTarget(target, overwrite=True)
        first.directory("ro", mode=0o555, mtime_ns=MTIME)
        first.file("ro/f", [b"new"], mode=0o444, mtime_ns=MTIME)
        first.finish()
        second = RestoreTarget(target, overwrite=True)
        second.file("old/f", [b"newer"], mode=0o444, mtime_ns=MTIME)
        second.file("ro/f", [b"newest"], mode=0o444, mtime_ns=MTIME)
        second.finish()

    parents = [p for p in tmp_path.parents if p != Path("/")]
    saved = {p: stat.S_IMODE(p.stat().st_mode) for p in parents}
    for p, mode in saved.items():
        os.chmod(p, mode | 0o001)  # let nobody reach tmp_path
    try:
        assert run_as_nobody(restore) == ""
    finally:
        for p, mode in saved.items():
            os.chmod(p, mode)
    assert (target / "ro" / "f").read_bytes() == b"newest"
    assert stat.S_IMODE(os.stat(target / "ro").st_mode) == 0o555
    assert (target / "old" / "f").read_bytes() == b"newer"
    # The pre-existing read-only directory got its own mode back.
    assert stat.S_IMODE(os.stat(target / "old").st_mode) == 0o555


def test_the_root_is_created_and_must_be_empty(scene: Scene) -> None:
    nested = scene.target / "x" / "y"
    RestoreTarget(nested).finish()
    assert nested.is_dir()
    (nested / "existing").write_bytes(b"mine")
    with pytest.raises(BackupError, match="not empty"):
        RestoreTarget(nested)
    RestoreTarget(nested, overwrite=True).abort()
    assert (nested / "existing").read_bytes() == b"mine"


def test_a_root_that_is_a_file_is_refused(scene: Scene) -> None:
    scene.target.write_bytes(b"file")
    with pytest.raises(BackupError, match="cannot open"):
        RestoreTarget(scene.target)
    scene.target.unlink()


def test_a_failing_chunk_stream_leaves_no_file_under_its_name(scene: Scene) -> None:
    # One file per batch: "kept" is complete (published, or being published by the
    # time abort() returns) before a failing rewrite of it.
    target = RestoreTarget(scene.target, batch_files=1)
    target.file("kept", [b"complete"], mode=0o644, mtime_ns=MTIME)
    with pytest.raises(IntegrityError):
        target.file("broken", chunks_then_fail(b"half of it"), mode=0o644, mtime_ns=MTIME)
    with pytest.raises(IntegrityError):
        target.file("kept", chunks_then_fail(b"new half"), mode=0o644, mtime_ns=MTIME)
    assert not (scene.target / "broken").exists()
    target.abort()
    assert (scene.target / "kept").read_bytes() == b"complete"
    assert sorted(os.listdir(scene.target)) == ["kept"]


def test_abort_removes_the_temporary_file_of_an_interrupted_write(scene: Scene) -> None:
    target = RestoreTarget(scene.target)
    seen: list[str] = []

    def interrupted() -> Iterator[bytes]:
        # Over 1 MiB: streamed by this thread into a temporary file as it is read.
        yield b"first" * 300_000
        seen.extend(temp_files(scene.target))
        target.abort()  # as a signal handler or another task would
        yield b"second"

    with pytest.raises(BackupError, match="aborted"):
        target.file("f", interrupted(), mode=0o644, mtime_ns=MTIME)
    assert len(seen) == 1
    assert os.listdir(scene.target) == []


def test_finished_or_aborted_targets_refuse_more_entries(scene: Scene) -> None:
    target = RestoreTarget(scene.target)
    target.finish()
    target.abort()
    with pytest.raises(BackupError, match="already finished"):
        target.file("f", [b"x"], mode=0o644, mtime_ns=MTIME)
    opened: list[RestoreTarget] = []

    def fail_inside_with() -> None:
        with RestoreTarget(scene.target, overwrite=True) as second:
            opened.append(second)
            second.file("g", chunks_then_fail(b"partial"), mode=0o644, mtime_ns=MTIME)

    with pytest.raises(IntegrityError):
        fail_inside_with()
    with pytest.raises(BackupError, match="already finished"):
        opened[0].finish()
    assert os.listdir(scene.target) == []


def test_set_id_bits_are_dropped_unless_asked_for(scene: Scene) -> None:
    target = RestoreTarget(scene.target)
    target.file("suid", [b"#!"], mode=0o6755, mtime_ns=MTIME)
    target.finish()
    assert stat.S_IMODE((scene.target / "suid").stat().st_mode) == 0o755
    target = RestoreTarget(scene.target, overwrite=True, special_bits=True)
    target.file("suid", [b"#!"], mode=0o4755, mtime_ns=MTIME)
    target.finish()
    assert stat.S_IMODE((scene.target / "suid").stat().st_mode) == 0o4755


def test_backslashes_are_name_characters_that_stay_inside(scene: Scene) -> None:
    target = RestoreTarget(scene.target)
    target.file("..\\..\\outside\\secret", [b"inside"], mode=0o644, mtime_ns=MTIME)
    target.file("dir\\..\\x", [b"inside"], mode=0o644, mtime_ns=MTIME)
    target.finish()
    assert sorted(os.listdir(scene.target)) == ["..\\..\\outside\\secret", "dir\\..\\x"]
    assert (scene.outside / "secret").read_bytes() == b"do not touch"


# -- what no entry can make it do -----------------------------------------------------------------

Step = Callable[[RestoreTarget, Scene], None]


def file_(path: object) -> Step:
    return lambda t, s: t.file(path, [b"pwned"], mode=0o644, mtime_ns=MTIME)  # type: ignore[arg-type]


def dir_(path: str, mode: int = 0o755) -> Step:
    return lambda t, s: t.directory(path, mode=mode, mtime_ns=MTIME)


def link(path: str, target: str | None = None) -> Step:
    return lambda t, s: t.symlink(path, str(s.outside) if target is None else target)


def finish(t: RestoreTarget, s: Scene) -> None:
    t.finish()


def run_steps(target: RestoreTarget, scene: Scene, steps: list[Step]) -> None:
    for step in steps:
        step(target, scene)


MALICIOUS: dict[str, list[Step]] = {
    "dotdot": [file_("../escape")],
    "dotdot inside": [file_("a/../../escape")],
    "dotdot at the end": [dir_("a/..")],
    "absolute": [file_("/tmp/sergas-restore-absolute-escape")],
    "absolute directory": [dir_("/tmp")],
    "empty path": [file_("")],
    "double slash": [file_("a//b")],
    "trailing slash": [file_("a/")],
    "dot component": [file_("./a")],
    "dot only": [dir_(".")],
    "NUL": [file_("a\x00b")],
    "not a string": [file_(None)],
    "symlink then write": [link("l"), file_("l/secret")],
    "symlink then directory under it": [link("l"), dir_("l/sub")],
    "symlink to a relative escape then write": [link("l", "../outside"), file_("l/secret")],
    "write then symlink over the parent": [file_("l/secret"), link("l"), finish],
    "directory then symlink over it": [dir_("l"), link("l"), finish],
    "symlink then directory replacing it": [link("l"), dir_("l"), finish],
    "symlink under a symlink": [link("l"), link("l/x", "y"), finish],
    "symlink then file of the same name": [link("l", "../outside/secret"), file_("l")],
    "file then file under it": [file_("f"), file_("f/g")],
    "file then directory of the same name": [file_("f"), dir_("f")],
    "symlink with an empty target": [link("l", "")],
    "symlink with NUL in its target": [link("l", "a\x00b")],
    "traversal after valid entries": [dir_("ok", 0o555), file_("ok/f"), file_("ok/../../escape")],
}


@pytest.mark.parametrize("steps", list(MALICIOUS.values()), ids=list(MALICIOUS))
def test_malicious_entries_are_refused_and_nothing_outside_changes(
    scene: Scene, steps: list[Step]
) -> None:
    before = scene.outside_state()
    target = RestoreTarget(scene.target)
    with pytest.raises(UnsafeRestoreError):
        run_steps(target, scene, steps)
    target.abort()
    assert scene.outside_state() == before
    assert not Path("/tmp/sergas-restore-absolute-escape").exists()
    assert temp_files(scene.target) == []
    assert not (scene.target / "l" / "secret").exists() or not (scene.target / "l").is_symlink()


def test_split_relpath_accepts_ordinary_paths() -> None:
    assert split_relpath("a/b c/..d/.e/d..") == ("a", "b c", "..d", ".e", "d..")


# -- a target that already holds things (overwrite=True) --------------------------------------


def test_a_pre_existing_symlink_on_the_way_is_replaced_never_followed(scene: Scene) -> None:
    scene.target.mkdir()
    (scene.target / "dir").symlink_to(scene.outside)
    (scene.target / "sub").symlink_to("../outside/sub")
    before = scene.outside_state()
    target = RestoreTarget(scene.target, overwrite=True)
    target.file("dir/secret", [b"restored"], mode=0o600, mtime_ns=MTIME)
    target.directory("sub", mode=0o755, mtime_ns=MTIME)
    target.file("sub/deep", [b"restored"], mode=0o600, mtime_ns=MTIME)
    target.finish()
    assert scene.outside_state() == before
    assert not (scene.target / "dir").is_symlink()
    assert (scene.target / "dir" / "secret").read_bytes() == b"restored"
    assert (scene.target / "sub" / "deep").read_bytes() == b"restored"


def test_a_pre_existing_symlink_or_hard_link_at_a_file_name_is_replaced(scene: Scene) -> None:
    scene.target.mkdir()
    (scene.target / "via-symlink").symlink_to(scene.outside / "secret")
    os.link(scene.outside / "sub" / "deep", scene.target / "via-hardlink")
    (scene.target / "old-link").symlink_to(scene.outside)
    before = scene.outside_state()
    target = RestoreTarget(scene.target, overwrite=True)
    target.file("via-symlink", [b"restored"], mode=0o600, mtime_ns=MTIME)
    target.file("via-hardlink", [b"restored"], mode=0o600, mtime_ns=MTIME)
    target.symlink("old-link", "elsewhere")
    target.finish()
    assert scene.outside_state() == before
    assert (scene.outside / "secret").read_bytes() == b"do not touch"
    assert (scene.outside / "sub" / "deep").read_bytes() == b"deep"
    assert (scene.target / "via-symlink").read_bytes() == b"restored"
    assert not (scene.target / "via-symlink").is_symlink()
    assert (scene.target / "via-hardlink").stat().st_nlink == 1
    assert os.readlink(scene.target / "old-link") == "elsewhere"


def test_a_pre_existing_directory_is_not_replaced_by_a_file(scene: Scene) -> None:
    (scene.target / "d").mkdir(parents=True)
    (scene.target / "d" / "keep").write_bytes(b"user data")
    target = RestoreTarget(scene.target, overwrite=True)
    with pytest.raises(BackupError, match="existing directory"):
        target.file("d", [b"x"], mode=0o644, mtime_ns=MTIME)
    target.abort()
    assert (scene.target / "d" / "keep").read_bytes() == b"user data"
    assert temp_files(scene.target) == []


def test_a_directory_swapped_for_a_symlink_mid_restore_is_not_followed(scene: Scene) -> None:
    """A racing process replaces a directory the restore made with a symlink outward."""
    before = scene.outside_state()
    target = RestoreTarget(scene.target)
    target.directory("d", mode=0o755, mtime_ns=MTIME)
    target.directory("e", mode=0o755, mtime_ns=MTIME)
    os.rmdir(scene.target / "d")
    (scene.target / "d").symlink_to(scene.outside)
    with pytest.raises(UnsafeRestoreError, match="non-directory"):
        target.file("d/secret", [b"pwned"], mode=0o644, mtime_ns=MTIME)
    target.abort()
    assert scene.outside_state() == before


def test_a_parent_swapped_between_two_files_keeps_writes_inside(scene: Scene) -> None:
    """The cached parent descriptor names the directory itself, not its path."""
    before = scene.outside_state()
    target = RestoreTarget(scene.target, batch_files=1)
    target.file("d/one", [b"1"], mode=0o644, mtime_ns=MTIME)
    os.rename(scene.target / "d", scene.target / "moved")
    (scene.target / "d").symlink_to(scene.outside)
    target.file("d/secret", [b"pwned"], mode=0o644, mtime_ns=MTIME)
    target.abort()
    assert scene.outside_state() == before
    assert (scene.target / "moved" / "secret").read_bytes() == b"pwned"
