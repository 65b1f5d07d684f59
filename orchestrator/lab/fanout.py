"""Fanning out over hosts: the one helper every step that does the same thing on many hosts uses."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor


def parallel(jobs: Sequence) -> list:
    """Run independent steps at once (each on its own SSH channel); the first failure is raised."""
    if len(jobs) == 1:
        return [jobs[0]()]
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        futs = [pool.submit(j) for j in jobs]
        return [f.result() for f in futs]
