"""Benchmark (not a test): peak memory of backup, list, verify and restore as the file
count grows, for this tree and (``--baseline DIR``) another checkout side by side.

Run from the repository root::

    python -m benchmarks.bench_manifest_memory [--files 20000 200000] [--distinct 512]
        [--baseline DIR]

For each file count a tree of that many small files (0.5-1.5 KiB, 100 per directory,
timestamps in the past) is generated once; each code tree then runs, each step in its
own process (its peak RSS is that process's own, from GNU ``/usr/bin/time``):

* ``backup``: a FULL backup into a new, encrypted repository
* ``incremental``: an unchanged INCREMENTAL (change detection against the parent)
* ``list``: ``list_backups()`` in a fresh process
* ``verify``: ``verify()`` (structure: every manifest's chunks)
* ``restore``: the newest backup into an empty directory

File contents are drawn from ``--distinct`` different texts (default 512), so the
number of chunks, and with it the chunk index (which grows with distinct chunks, as
restic's does), stays the same at every size: what is left to grow with the file count
is per-file state, which is what this measures. ``--distinct 0`` makes every file
distinct. ``--baseline`` takes a directory holding another checkout (e.g.
``git archive 3f687d2 | tar -x -C /tmp/old``); its manager runs the same steps.
Ratios are largest/smallest file count: 1.0 means memory does not grow with files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_recovery import Run, measured

STEPS = ("backup", "incremental", "list", "verify", "restore")
PASSPHRASE = "bench-manifest-memory"
#: Run by ``python -c`` with the code tree as the working directory, so the same text
#: drives this tree and a baseline checkout (whose API it must share).
STEP_IN_A_CHILD = """
import asyncio, sys
from pathlib import Path
from sergas_guard.recovery import BackupManager, BackupType
step, repo, path = sys.argv[1:4]
manager = BackupManager(Path(repo), passphrase=lambda: sys.argv[4])
async def main() -> None:
    if step in ("backup", "incremental"):
        kind = BackupType.FULL if step == "backup" else BackupType.INCREMENTAL
        await manager.create_backup("mem", path, kind, retention_days=None)
    elif step == "list":
        assert len(manager.list_backups()) == 2
    elif step == "verify":
        assert (await manager.verify()).ok
    else:
        await manager.restore_backup(manager.list_backups()[-1].backup_id, path)
asyncio.run(main())
"""


def generate(root: Path, files: int, distinct: int, seed: int = 13) -> None:
    """``files`` small files under ``root``, 100 per directory, old timestamps."""
    rng = random.Random(seed)
    pool = [rng.randbytes(rng.randint(512, 1536)) for _ in range(distinct or 1)]
    stamp = 1_700_000_000_000_000_000
    for index in range(files):
        directory = root / f"d{index // 10000:03}" / f"s{index // 100 % 100:02}"
        if index % 100 == 0:
            directory.mkdir(parents=True)
        content = pool[index % len(pool)] if distinct else rng.randbytes(rng.randint(512, 1536))
        path = directory / f"file-{index:07}.txt"
        path.write_bytes(content)
        os.utime(path, ns=(stamp, stamp))


def run_steps(code: Path, source: Path, scratch: Path) -> dict[str, Run]:
    repo, target = scratch / "repo", scratch / "restored"
    results: dict[str, Run] = {}
    env = {**os.environ, "PYTHONPATH": str(code)}
    for step in STEPS:
        path = str(target if step == "restore" else source)
        argv = [sys.executable, "-c", STEP_IN_A_CHILD, step, str(repo), path, PASSPHRASE]
        cwd = os.getcwd()
        os.chdir(code)
        try:
            results[step] = measured(argv, env)
        finally:
            os.chdir(cwd)
    shutil.rmtree(scratch)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--distinct", type=int, default=512)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    trees = {"this tree": Path.cwd()}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    table: dict[tuple[str, int], dict[str, Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as work:
        for files in args.files:
            source = Path(work) / f"source-{files}"
            generate(source, files, args.distinct)
            for name, code in trees.items():
                scratch = Path(work) / f"run-{files}-{name.replace(' ', '-')}"
                scratch.mkdir()
                table[(name, files)] = run_steps(code, source, scratch)
            shutil.rmtree(source)
    print(f"load average {os.getloadavg()[0]:.2f}; distinct contents: {args.distinct or 'all'}")
    print(f"{'code':<10} {'files':>8} " + " ".join(f"{s + ' MiB':>15}" for s in STEPS))
    for (name, files), runs in table.items():
        cells = " ".join(f"{runs[s].peak_rss_mib:>8.1f} ({runs[s].seconds:>4.1f}s)" for s in STEPS)
        print(f"{name:<10} {files:>8} {cells}")
    low, high = min(args.files), max(args.files)
    for name in trees:
        ratios = " ".join(
            f"{s}={table[(name, high)][s].peak_rss_mib / table[(name, low)][s].peak_rss_mib:.2f}"
            for s in STEPS
        )
        print(f"{name}: peak RSS at {high} / at {low} files: {ratios}")


if __name__ == "__main__":
    main()
