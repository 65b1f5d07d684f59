"""williamson: the reference virus throttle — a thin descriptor over `throttle/` (nothing moved or changed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..spec import Mechanism, Param, StartContext, flags


def _start(p: Mapping[str, Any], c: StartContext) -> list[str]:
    argv = [c.python, "-m", "throttle", "run", "--mode", c.placement,
            *flags([("--working-set", p["working_set_size"]), ("--limit", p["delay_queue_limit"]),
                    ("--period", p["release_period_s"]), ("--policy", p["policy"]),
                    ("--release-clock", p["release_clock"]), ("--queue-num", c.queue_num),
                    ("--protocols", ",".join(c.protocols))])]
    if c.interface:
        argv += ["--interface", c.interface]
    if c.events:
        argv += ["--events", c.events]
    if c.fail_closed:
        argv.append("--fail-closed")
    if c.initial_working_set:
        argv += ["--initial-working-set", *c.initial_working_set]
    return argv


def _check(p: Mapping[str, Any]) -> None:
    from throttle.core import ThrottleConfig
    ThrottleConfig(**p)


WILLIAMSON = Mechanism(
    name="williamson",
    summary="the reference virus throttle: a working set of recent destinations, a delay queue released one "
            "per period, a block when the queue passes its limit (NFQUEUE daemon)",
    reference="Williamson 2002; Twycross & Williamson, USENIX Security 2003",
    params=(
        Param("working_set_size", "int", 5, "destinations a source may contact without delay", low=1),
        Param("delay_queue_limit", "int", 100, "queued connections at which the source is blocked", low=0),
        Param("release_period_s", "float", 1.0, "one queued connection leaves per period", low=0, open="low"),
        Param("policy", "str", "packets", "packets: every SYN is an entry; connections: retransmissions join",
              choices=("packets", "connections")),
        Param("release_clock", "str", "armed", "armed: one period after an empty queue's first entry; free: "
              "a fixed grid", choices=("armed", "free")),
    ),
    placements=("host", "gateway", "wire"),
    daemon=True, event_log=True,
    model="mechanisms.williamson.model:predict",
    role="playbooks/roles/throttle",
    start=_start,
    stop=lambda c: [c.python, "-m", "throttle", "clear"],
    doc="docs/throttle.md",
    aliases=("throttle",),
    check=_check,
)
