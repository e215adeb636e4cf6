"""A worker process for the shared-flags test: watches one flag and reports when it flips.

Run as ``python -m tests.degradation.flag_worker REDIS_URL FLAG``. It prints ``ready``,
then ``seen <monotonic time>`` when the flag's value differs from its first reading,
or ``timeout`` after 10 seconds. With ``--set`` it turns the flag off itself instead and
prints ``set <monotonic time>``.
"""

from __future__ import annotations

import sys
import time

from sergas_guard.degradation import FeatureFlags
from sergas_guard.storage.redis import RedisStorage


def main() -> None:
    url, flag = sys.argv[1], sys.argv[2]
    flags = FeatureFlags(storage=RedisStorage(url), refresh_interval=0.5)
    if "--set" in sys.argv:
        flags.disable(flag)
        print(f"set {time.monotonic()}", flush=True)
        return
    first = flags.is_enabled(flag)
    print("ready", flush=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if flags.is_enabled(flag) != first:
            print(f"seen {time.monotonic()}", flush=True)
            return
        time.sleep(0.01)
    print("timeout", flush=True)


if __name__ == "__main__":
    main()
