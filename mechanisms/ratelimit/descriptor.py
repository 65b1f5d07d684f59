"""rate-limit: new connections per source, an nftables meter (mechanisms/ratelimit/README.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..spec import Mechanism, Param, StartContext, flags


def _start(p: Mapping[str, Any], c: StartContext) -> list[str]:
    argv = [c.python, "-m", "mechanisms.ratelimit", "apply", "--placement", c.placement,
            *flags([("--new-per-s", p["new_per_s"]), ("--burst", p["burst"]),
                    ("--protocols", ",".join(c.protocols))])]
    if c.interface:
        argv += ["--interface", c.interface]
    return argv


def _check(p: Mapping[str, Any]) -> None:
    from .rules import RateLimitConfig
    RateLimitConfig(new_per_s=p["new_per_s"], burst=p["burst"])


RATE_LIMIT = Mechanism(
    name="rate-limit",
    summary="what an operator deploys: a token bucket per source on new connections, in the kernel (nftables "
            "meter); never blocks, its figure is the rate it lets out",
    reference="nftables meters / iptables hashlimit",
    params=(
        Param("new_per_s", "float", 2.0, "new connections a source may open per second", low=0, open="low"),
        Param("burst", "int", 5, "new connections a fresh source may open at once", low=1, high=1_000_000),
    ),
    placements=("host", "gateway"),
    daemon=False, event_log=False,
    model="mechanisms.ratelimit.model:predict_registry",
    role="mechanisms/ratelimit/role",
    start=_start,
    stop=lambda c: [c.python, "-m", "mechanisms.ratelimit", "clear"],
    doc="mechanisms/ratelimit/README.md",
    check=_check,
)
