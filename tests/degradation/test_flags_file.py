"""Flags in a JSON file: atomic writes, a crash before the rename, hot reload, bad files."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sergas_guard.clock import ManualClock
from sergas_guard.degradation import FeatureFlags
from sergas_guard.degradation.flag_file import atomic_write
from sergas_guard.errors import ConfigurationError


def write_flags(path: Path, flags: dict[str, dict[str, object]]) -> None:
    """An operator (or config management) replacing the file, as another program would."""
    atomic_write(path, json.dumps({"version": 1, "flags": flags}).encode())


def test_flags_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    flags = FeatureFlags(path=path)
    flags.register("search", description="full-text search", essential=True)
    flags.set_rollout_percentage("new_checkout", 25.0)
    flags.deny_user("search", "abuser")

    restarted = FeatureFlags(path=path)
    assert restarted.get("search") == flags.get("search")
    assert restarted.get("new_checkout") is not None
    assert restarted.get("new_checkout").rollout_percentage == 25.0  # type: ignore[union-attr]
    assert not restarted.is_enabled("search", user_id="abuser")
    assert json.loads(path.read_text())["flags"]["search"]["essential"] is True


def test_registration_keeps_a_persisted_definition(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, {"search": {"enabled": False}})
    flags = FeatureFlags(path=path)
    # The operator turned it off; code registering its default must not turn it back on.
    assert flags.register("search", enabled=True).enabled is False
    assert not flags.is_enabled("search")
    assert flags.register("search", enabled=True, overwrite=True).enabled is True
    assert json.loads(path.read_text())["flags"]["search"]["enabled"] is True


def test_a_crash_between_write_and_rename_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    FeatureFlags(path=path).register("search", enabled=True)
    before = path.read_bytes()
    # A real process writes new flags and is killed (SIGKILL) after the temporary file
    # is written and fsynced, just before the rename.
    script = f"""
import os, signal
from pathlib import Path
from sergas_guard.degradation.definitions import FlagDefinition
from sergas_guard.degradation.flag_file import FlagFile
flags = {{"search": FlagDefinition(name="search", enabled=False)}}
def crash(tmp: Path) -> None:
    assert tmp.read_bytes()  # the new content is on disk
    os.kill(os.getpid(), signal.SIGKILL)
FlagFile({str(path)!r}).save(flags, before_replace=crash)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert path.read_bytes() == before
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the crash really happened after the write
    assert b'"enabled": false' in leftovers[0].read_bytes()
    assert FeatureFlags(path=path).is_enabled("search")


def test_a_failed_write_leaves_old_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    flags = FeatureFlags(path=path)
    flags.register("search")

    def fail(tmp: Path) -> None:
        raise OSError("disk full")

    before = path.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, b"{}", before_replace=fail)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["flags.json"]  # temp file removed


def test_an_unwritable_file_refuses_the_change(tmp_path: Path) -> None:
    flags = FeatureFlags(path=tmp_path / "missing-dir" / "flags.json")
    with pytest.raises(ConfigurationError, match="cannot write flags file"):
        flags.register("search")
    assert flags.get("search") is None  # not in force when it could not be saved


def test_file_permissions_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    flags = FeatureFlags(path=path)
    flags.register("a")
    os.chmod(path, 0o640)
    flags.register("b")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_an_edited_file_is_picked_up_without_restart(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, {"search": {"enabled": True}})
    flags = FeatureFlags(path=path, refresh_interval=0.5, clock=clock)
    assert flags.is_enabled("search")

    write_flags(path, {"search": {"enabled": False}, "chat": {}})
    assert flags.is_enabled("search")  # not checked again before the interval
    clock.advance(0.5)
    assert not flags.is_enabled("search")
    assert flags.is_enabled("chat")


def test_a_malformed_file_is_rejected_and_the_last_good_flags_stay(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, {"search": {"enabled": True, "rollout_percentage": 100}})
    flags = FeatureFlags(path=path, refresh_interval=0.5, clock=clock)

    atomic_write(path, b'{"flags": {"search": {"rollout_percentage": 250}}}')
    clock.advance(1)
    with caplog.at_level(logging.ERROR, logger="sergas_guard.degradation.flags"):
        assert flags.is_enabled("search")
    assert flags.last_error is not None
    assert "flag 'search'" in flags.last_error
    assert str(path) in flags.last_error
    assert "keeping the last good flags" in caplog.text
    with pytest.raises(ConfigurationError, match="rollout_percentage"):
        flags.reload()
    assert flags.is_enabled("search")

    write_flags(path, {"search": {"enabled": False}})  # fixed
    clock.advance(1)
    assert not flags.is_enabled("search")
    assert flags.last_error is None


def test_a_malformed_file_at_start_up_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text("{ this is not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        FeatureFlags(path=path)


def test_a_deleted_file_does_not_delete_the_flags(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, {"search": {}})
    flags = FeatureFlags(path=path, clock=clock)
    path.unlink()
    clock.advance(1)
    assert flags.is_enabled("search")


def test_concurrent_updates_from_threads_all_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    flags = FeatureFlags(path=path)

    def register(i: int) -> None:
        flags.register(f"flag-{i}", rollout_percentage=i)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    on_disk = json.loads(path.read_text())["flags"]
    assert sorted(on_disk) == sorted(f"flag-{i}" for i in range(20))


def test_save_without_a_file_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="no file"):
        FeatureFlags().save()


def test_a_directory_is_not_a_flags_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="directory"):
        FeatureFlags(path=tmp_path)
