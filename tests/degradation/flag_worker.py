"""A worker process for the shared-flags test: watches one flag and reports each flip.

Run as ``python -m tests.degradation.flag_worker REDIS_URL FLAG``. It prints ``ready``,
then ``seen <monotonic time>`` every time the flag's value changes, for 30 seconds
or until killed. With ``--set`` it turns the flag off itself instead and prints
``set <monotonic time>``.
"""

from __future__ import annotations

import sys
import time

from sergas_guard.degradation import FeatureFlags
from sergas_guard.ratelimit.stores.redis import RedisStorage


def main() -> None:
    url, flag = sys.argv[1], sys.argv[2]
    storage = RedisStorage(url, socket_timeout=2.0, connect_timeout=2.0)
    flags = FeatureFlags(storage=storage, refresh_interval=0.5)
    if "--set" in sys.argv:
        flags.disable(flag)
        print(f"set {time.monotonic()}", flush=True)
        return
    last = flags.is_enabled(flag)
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = flags.is_enabled(flag)
        if now != last:
            print(f"seen {time.monotonic()}", flush=True)
            last = now
        time.sleep(0.01)


if __name__ == "__main__":
    main()
