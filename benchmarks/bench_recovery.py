"""Benchmark (not a test): sergas_guard.recovery against restic on one generated dataset.

Run from the repository root (restic on the PATH, or ``--restic``):

    python -m benchmarks.bench_recovery [--size 1GiB] [--rounds 1] [--seed 13] [--profile DIR]

One dataset is generated once into a temporary directory, deterministically from the
seed: many small text-like files (1-64 KiB, in directories of 100), a few large files
(alternating compressible and incompressible MiB blocks, as logs next to media), and
duplicate content (a copy of a large file shifted by an inserted prefix, which only
content-defined chunking deduplicates, and copies of small files). Both tools use
compression and encryption with their defaults (restic: repository v2, ``auto``
compression, its own cache dir; ours: zstd level 3, AES-256-GCM) and the same
passphrase from ``RESTIC_PASSWORD``. Each tool runs as its own process per step, so
its wall time includes start-up and key derivation, and its peak RSS is that
process's own, as GNU ``/usr/bin/time`` reports it. The steps, alternating tools:

* first backup, into a new repository (MiB/s of source data)
* an unchanged second backup (ours as INCREMENTAL: restic re-uses its parent
  snapshot the same way, by path, size, mtime and inode)
* a restore of the latest backup into an empty directory, then checked
* the repository size on disk

With ``--rounds N`` all of it runs N times on fresh repositories and each figure is
the best round's (the highest peak RSS): on a shared machine noise only ever slows.

Ratios are ours / restic for throughput (higher is better) and size and memory
(lower is better). The page cache is warm for both (the dataset was just written);
this is a shared 2-core machine, so the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASSPHRASE = "bench-recovery-passphrase"
MIB = 1024 * 1024
TIME = "/usr/bin/time"  # GNU time: %M is the peak RSS of the process it runs, in KiB
#: A skewed alphabet: random text over it compresses with zstd to about half.
_TEXT = b"eeeeeeeetttttaaaaooooiiinnnsssshhrrdllcumwfgypbvk  \n\n,.0123456789"
TEXT_TABLE = bytes(_TEXT[i % len(_TEXT)] for i in range(256))


# -- the dataset -----------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"128MiB"``, ``"512k"`` or plain bytes."""
    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    stripped = text.strip().lower().removesuffix("ib").removesuffix("b")
    if stripped and stripped[-1] in units:
        return int(float(stripped[:-1]) * units[stripped[-1]])
    return int(stripped)


def text_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n).translate(TEXT_TABLE)


def generate(root: Path, size: int, seed: int) -> tuple[int, int]:
    """Write the dataset under ``root``; ``(files, bytes)``. Same seed, same bytes."""
    rng = random.Random(seed)
    files = written = 0

    def put(path: Path, blocks: list[bytes]) -> None:
        nonlocal files, written
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for block in blocks:
                out.write(block)
                written += len(block)
        files += 1

    # Many small files: a quarter of the bytes.
    small: list[Path] = []
    budget = size // 4
    while budget > 0:
        n = min(rng.randint(1024, 64 * 1024), budget)
        index = len(small)
        path = root / "small" / f"d{index // 1000:03}" / f"s{index // 100 % 10}" / f"f{index}.txt"
        put(path, [text_bytes(rng, n)])
        small.append(path)
        budget -= n
    # A few large files: over half of the bytes, half of each compressible.
    large_size = size * 55 // 100 // 4
    large: list[Path] = []
    for i in range(4):
        path = root / "large" / f"blob{i}.bin"
        blocks = [
            text_bytes(rng, MIB) if b % 2 else rng.randbytes(MIB)
            for b in range(max(large_size // MIB, 1))
        ]
        put(path, blocks)
        large.append(path)
    # Duplicate content: the first large file behind an inserted prefix, and copies of
    # small files until the dataset reaches its size.
    shifted = root / "dup" / "blob0.shifted"
    with open(large[0], "rb") as stream:
        put(shifted, [b"inserted prefix\n" * 7, *iter(lambda: stream.read(MIB), b"")])
    copies = 0
    while written < size and small:
        original = small[rng.randrange(len(small))]
        put(root / "dup" / "small" / f"copy{copies}.txt", [original.read_bytes()])
        copies += 1
    # Old timestamps: a file modified within a second of a backup is re-read by design.
    stamp = 1_700_000_000_000_000_000
    for directory, _, names in os.walk(root):
        for name in names:
            os.utime(Path(directory, name), ns=(stamp, stamp))
    return files, written


def tree_digest(root: Path) -> tuple[int, int, str]:
    """``(files, bytes, digest)`` of the relative paths, sizes and content of ``root``."""
    digest = hashlib.sha256()
    files = total = 0
    for directory, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            size = path.stat().st_size
            digest.update(f"{relative}\0{size}\0".encode())
            with open(path, "rb") as stream:
                while block := stream.read(4 * MIB):
                    digest.update(block)
            files += 1
            total += size
    return files, total, digest.hexdigest()


def disk_bytes(root: Path) -> int:
    return sum(Path(d, n).stat().st_size for d, _, names in os.walk(root) for n in names)


# -- running each tool as a measured process ---------------------------------------


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mib: float
    output: str


def measured(argv: list[str], env: dict[str, str]) -> Run:
    """Run ``argv`` to completion: wall time, peak RSS and stdout.

    The peak RSS comes from ``/usr/bin/time``, the process that forks ``argv``: a
    process forked straight from this one would count this one's (large) high-water
    mark too, since Linux carries it across fork and exec.
    """
    with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.run(
            [TIME, "-f", "%M", "-o", rss.name, *argv], env=env, stdout=out, stderr=subprocess.PIPE
        )
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            tail = process.stderr.decode()[-3000:]
            raise SystemExit(f"{argv[0]} failed ({process.returncode}):\n{tail}")
        out.seek(0)
        return Run(seconds, int(Path(rss.name).read_text().split()[-1]) / 1024, out.read().decode())


def ours_argv(step: str, *args: str, profile: Path | None) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks.bench_recovery", "--child", step, *args]
    if profile is not None:
        argv += ["--profile", str(profile)]
    return argv


def child(step: str, args: list[str], profile: Path | None) -> None:
    """One step of ours, in this process: prints its result as JSON."""
    from sergas_guard.recovery import BackupManager, BackupType

    repo, target = Path(args[0]), args[1]
    manager = BackupManager(repo, passphrase=lambda: os.environ["RESTIC_PASSWORD"])

    async def run() -> dict[str, Any]:
        if step == "restore":
            backup_id = manager.list_backups()[-1].backup_id
            await manager.restore_backup(backup_id=backup_id, restore_path=target)
            return {"backup_id": backup_id}
        kind = BackupType.FULL if step == "first" else BackupType.INCREMENTAL
        metadata = await manager.create_backup(
            name="bench", source=target, backup_type=kind, retention_days=None
        )
        return {"backup_id": metadata.backup_id, "stored_bytes": metadata.stored_bytes}

    profiler = cProfile.Profile() if profile is not None else None
    if profiler is not None:
        # cProfile sees only its own thread: run the manager's worker-thread calls inline.
        async def inline(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        asyncio.to_thread = inline
        profiler.enable()
    result = asyncio.run(run())
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(profile / f"ours-{step}.prof")
    print(json.dumps(result))


# -- the comparison ----------------------------------------------------------------


def compare(args: argparse.Namespace) -> None:
    restic = shutil.which(args.restic) or args.restic
    version = subprocess.run([restic, "version"], capture_output=True, text=True, check=True)
    env = {**os.environ, "RESTIC_PASSWORD": PASSPHRASE}
    profile: Path | None = args.profile
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-recovery-", dir=args.workdir) as scratch:
        work = Path(scratch)
        data = work / "data"
        started = time.perf_counter()
        files, size = generate(data, args.size, args.seed)
        expected = tree_digest(data)
        print(
            f"dataset: {files} files, {size / MIB:.0f} MiB (seed {args.seed}), "
            f"generated in {time.perf_counter() - started:.1f} s; {version.stdout.strip()}"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        runs: dict[tuple[str, str], Run] = {}
        sizes: dict[str, int] = {}
        for round_ in range(args.rounds):
            here = work / f"round{round_}"
            here.mkdir()
            for key, run in one_round(here, data, restic, env, profile, expected).items():
                # The fastest round of each, and the highest peak: noise only ever slows.
                best = runs.setdefault(key, run)
                peak = max(best.peak_rss_mib, run.peak_rss_mib)
                runs[key] = Run(min(best.seconds, run.seconds), peak, "")
            sizes = {tool: disk_bytes(here / f"{tool}-repo") for tool in ("restic", "ours")}
            shutil.rmtree(here)
        load_after = os.getloadavg()[0]
    report(runs, sizes, size, load_after)
    if profile is not None:
        for step in ("first", "second", "restore"):
            print(f"\n-- ours, {step}: top functions by own time --")
            stats = pstats.Stats(str(profile / f"ours-{step}.prof"))
            stats.sort_stats("tottime").print_stats(12)


def one_round(
    work: Path,
    data: Path,
    restic: str,
    env: dict[str, str],
    profile: Path | None,
    expected: tuple[int, int, str],
) -> dict[tuple[str, str], Run]:
    """Both tools, alternating: first backup, unchanged second, restore (checked)."""
    env = {**env, "RESTIC_CACHE_DIR": str(work / "restic-cache")}
    restic_repo, ours_repo = work / "restic-repo", work / "ours-repo"
    measured([restic, "-r", str(restic_repo), "init", "--quiet"], env)
    backup = [restic, "-r", str(restic_repo), "backup", "--quiet", str(data)]
    runs: dict[tuple[str, str], Run] = {}
    for step in ("first", "second"):
        runs["restic", step] = measured(backup, env)
        runs["ours", step] = measured(
            ours_argv(step, str(ours_repo), str(data), profile=profile), env
        )
    restic_target, ours_target = work / "restic-restore", work / "ours-restore"
    restore = [restic, "-r", str(restic_repo), "restore", "latest", "--quiet"]
    runs["restic", "restore"] = measured([*restore, "--target", str(restic_target)], env)
    runs["ours", "restore"] = measured(
        ours_argv("restore", str(ours_repo), str(ours_target), profile=profile), env
    )
    # restic restores the absolute source path under its target.
    restored = {
        "restic": tree_digest(restic_target / data.relative_to(data.anchor)),
        "ours": tree_digest(ours_target),
    }
    for tool, digest in restored.items():
        if digest != expected:
            raise SystemExit(f"{tool}'s restore differs from the dataset")
    return runs


def report(
    runs: dict[tuple[str, str], Run], sizes: dict[str, int], size: int, load_after: float
) -> None:
    rows: list[tuple[str, str, str, str, str]] = []
    for step, label, target in (
        ("first", "first backup", ">= 0.6x"),
        ("second", "unchanged second backup", ">= 1x"),
        ("restore", "restore", ">= 0.6x"),
    ):
        ours, restic = runs["ours", step], runs["restic", step]
        rows.append(
            (
                f"{label} (MiB/s)",
                f"{size / MIB / ours.seconds:.1f} ({ours.seconds:.2f} s)",
                f"{size / MIB / restic.seconds:.1f} ({restic.seconds:.2f} s)",
                f"{restic.seconds / ours.seconds:.2f}x",
                target,
            )
        )
    rows.append(
        (
            "repository size (MiB)",
            f"{sizes['ours'] / MIB:.1f}",
            f"{sizes['restic'] / MIB:.1f}",
            f"{sizes['ours'] / sizes['restic']:.3f}x",
            "<= 1.05x",
        )
    )
    for step in ("first", "second", "restore"):
        ours, restic = runs["ours", step], runs["restic", step]
        rows.append(
            (
                f"peak RSS, {step} (MiB)",
                f"{ours.peak_rss_mib:.0f}",
                f"{restic.peak_rss_mib:.0f}",
                f"{ours.peak_rss_mib / restic.peak_rss_mib:.2f}x",
                "bounded",
            )
        )
    header = ("", "sergas_guard", "restic", "ours/restic", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    print()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
    print(f"\nload average after: {load_after:.2f} (2 shared cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1024 * MIB, help="e.g. 1GiB, 128MiB")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--rounds", type=int, default=1, help="best of N (fresh repositories)")
    parser.add_argument("--restic", default="restic")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile ours into DIR")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child is not None:
        child(args.child, rest, args.profile)
    else:
        compare(args)


if __name__ == "__main__":
    main()
