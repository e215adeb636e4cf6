"""Percentage rollout: which users a partly rolled-out flag is on for.

A user falls into one of 10,000 buckets (0.01 % resolution), chosen by a hash of the
flag name and the user id. The flag is on for the user when the bucket is below
``percentage * 100``. Hence the rollout is

* deterministic and sticky: the same flag and user always land in the same bucket,
  in every process and on every machine (SHA-256, not Python's salted ``hash``);
* monotonic: raising the percentage only adds buckets, lowering it only removes them;
* independent between flags: the flag name salts the hash, so the first 10 % of one
  flag are not the first 10 % of every flag.
"""

from __future__ import annotations

import hashlib

__all__ = ["BUCKETS", "bucket_of", "in_rollout", "rollout_threshold"]

BUCKETS = 10_000


def bucket_of(flag: str, user_id: str) -> int:
    """The user's bucket for this flag, in ``range(BUCKETS)``."""
    digest = hashlib.sha256(f"{flag}\x00{user_id}".encode()).digest()
    # 64 bits modulo 10,000: the modulo bias is below 1e-15, far under the resolution.
    return int.from_bytes(digest[:8], "big") % BUCKETS


def rollout_threshold(percentage: float) -> int:
    """Number of buckets a percentage covers (``25.0`` -> 2,500), clamped to 0..BUCKETS."""
    return max(0, min(BUCKETS, round(percentage * (BUCKETS / 100))))


def in_rollout(flag: str, user_id: str, percentage: float) -> bool:
    """Whether ``user_id`` is among the ``percentage`` of users the flag is rolled out to."""
    threshold = rollout_threshold(percentage)
    if threshold >= BUCKETS:
        return True
    if threshold <= 0:
        return False
    return bucket_of(flag, user_id) < threshold
