"""trw: Threshold Random Walk on first-contact outcomes (mechanisms/trw/README.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..spec import Mechanism, Param, StartContext, flags


def _start(p: Mapping[str, Any], c: StartContext) -> list[str]:
    argv = [c.python, "-m", "mechanisms.trw", "run", "--mode", c.placement,
            *flags([("--theta0", p["theta0"]), ("--theta1", p["theta1"]), ("--alpha", p["alpha"]),
                    ("--beta", p["beta"]), ("--timeout", p["timeout_s"]), ("--queue-num", c.queue_num)])]
    if c.interface and c.placement == "host":
        argv += ["--interface", c.interface]
    if c.events:
        argv += ["--events", c.events]
    if c.fail_closed:
        argv.append("--fail-closed")
    return argv


def _check(p: Mapping[str, Any]) -> None:
    from .core import TrwConfig
    TrwConfig(**p)


def _prob(name: str, default: float, text: str) -> Param:
    return Param(name, "float", default, text, low=0, high=1, open="both")


TRW = Mechanism(
    name="trw",
    summary="a sequential hypothesis test per source on its first contacts' outcomes (established: success; "
            "RST, ICMP unreachable, timeout: failure); blocks when the likelihood ratio reaches beta/alpha "
            "(NFQUEUE daemon on the SYNs and their answers)",
    reference="Jung, Paxson, Berger & Balakrishnan, IEEE S&P 2004",
    params=(
        _prob("theta0", 0.8, "P(first contact succeeds | benign)"),
        _prob("theta1", 0.2, "P(first contact succeeds | scanner)"),
        _prob("alpha", 0.01, "false-positive target"),
        _prob("beta", 0.99, "detection target"),
        Param("timeout_s", "float", 3.0, "an unanswered first contact fails this long after its SYN",
              low=0, open="low"),
    ),
    placements=("host", "gateway"),
    daemon=True, event_log=True,
    model="mechanisms.trw.model:predict",
    role="mechanisms/trw/role",
    start=_start,
    stop=lambda c: [c.python, "-m", "mechanisms.trw", "clear"],
    doc="mechanisms/trw/README.md",
    protocols=("tcp",),
    check=_check,
)
