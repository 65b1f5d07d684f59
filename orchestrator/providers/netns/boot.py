"""Booting a namespace lab's hosts after `up` has wired them: keys, per-host state directories and one sshd per
host, in a detached process of its own, as machines boot once their hardware is there.

`up` returns when the network is ready (200 hosts in under 2 s); starting 200 sshds takes a few seconds more
and happens here. The netns provider records this process and ends it first on `down`; its progress is in
the lab's state directory: boot.log, and `booted` (or `boot-failed`, with the reason) when it is done.

    python -m orchestrator.providers.netns.boot LAB
"""

from __future__ import annotations

import sys
import time
import traceback

from orchestrator.atomic import atomic_write_text
from orchestrator.providers.state import StateStore


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m orchestrator.providers.netns.boot LAB", file=sys.stderr)
        return 2
    from orchestrator.providers.netns.provider import NetnsProvider

    name = argv[0]
    store = StateStore()
    rec = store.load(name)
    if rec is None:
        print(f"no lab named {name}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    try:
        NetnsProvider(store)._boot(rec.topology)
    except Exception as exc:            # record why, for wait_booted() and testbed status to say
        traceback.print_exc()
        atomic_write_text(store.lab_dir(name) / "boot-failed", f"{type(exc).__name__}: {exc}\n", fsync=False)
        return 1
    atomic_write_text(store.lab_dir(name) / "booted", f"{time.time():.3f} {time.monotonic() - t0:.3f}\n", fsync=False)
    print(f"booted {len(rec.topology.hosts)} hosts in {time.monotonic() - t0:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
