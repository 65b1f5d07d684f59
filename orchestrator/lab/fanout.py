"""Fanning out over hosts: the one helper every step that does the same thing on many hosts uses.

Each job is typically one SSH round trip (a channel opened, a command run). Run all of a 200-host lab's at once
and one process holds hundreds of threads spinning on their channels beside hundreds of paramiko transport
threads, on a machine the worm already loads: a channel's open confirmation then waits past its timeout
(`SSHException: Timeout opening channel`, docs/spread.md). So at most `limit` jobs run at a time; a lab of up to
MAX_FANOUT hosts runs every job at once, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

MAX_FANOUT = 32        # jobs (SSH channels) in flight at once, per fan-out


def parallel(jobs: Sequence, limit: int = MAX_FANOUT) -> list:
    """Run independent steps side by side, at most `limit` at a time, every one to its end; the results in the
    jobs' order; the first failure (in that order) is raised once all have run."""
    if len(jobs) == 1:
        return [jobs[0]()]
    with ThreadPoolExecutor(max_workers=max(1, min(limit, len(jobs)))) as pool:
        futs = [pool.submit(j) for j in jobs]
        return [f.result() for f in futs]
