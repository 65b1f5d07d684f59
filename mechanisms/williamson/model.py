"""williamson's model in the registry's shape: `throttle.model` (unchanged) fed with the worm's log."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from throttle.core import ThrottleConfig
from throttle.model import arrivals_from_worm_log, read_worm_log, replay


def predict(worm_log: Iterable[str | Mapping[str, Any]], params: Mapping[str, Any], *, placement: str,
            initial_working_set: tuple[str, ...] = (), retransmit: str = "linux") -> dict[str, dict[str, Any]]:
    """Per source: blocked, stop_s (from its first arrival), out_before_block, wire_rate (None: it blocks)."""
    cfg = ThrottleConfig(working_set_size=params["working_set_size"], delay_queue_limit=params["delay_queue_limit"],
                         release_period_s=params["release_period_s"], policy=params["policy"],
                         release_clock=params["release_clock"], initial_working_set=tuple(initial_working_set))
    rep = replay(arrivals_from_worm_log(read_worm_log(worm_log), retransmit=retransmit), cfg, placement=placement)
    return {src: {"blocked": sr.blocked_at is not None, "stop_s": sr.stop_s, "out_before_block": sr.out_before_block,
                  "wire_rate": None} for src, sr in rep.sources.items()}
