"""A detector's false positives over hosts and time (issue 17), from the benign trials' records: pure functions.

Every host of a benign trial ran no worm, so its first `blocked` event (from the mechanism's own log) is a false
block. Over the hosts of a trial (or of the trials of one mechanism, setting, protocol and rate):
- `fp_rate`: hosts falsely blocked / hosts;
- `fp_per_host_hour`: false blocks per host-hour of benign use (each host exposed from its first scheduled
  connection until its block, or for the session's span when never blocked: the incidence rate);
- the survival curve: the share of hosts not yet blocked against the time since their first connection.

TRW's prediction for one host comes from its own schedule: each connection's first SYN at its time, answered
at once (a live server: established) or refused (a `miss`, to a target without a server), replayed through
TRW's own core (mechanisms.trw.model.replay_attempts): the block falls on the failed first contact that takes
the walk to ln(β/α).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

HOUR_S = 3600.0
SRC = "benign-host"


def trw_attempts(conns: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The generator's connection records as TRW attempts: the SYN when `connect()` was called (`t_mono`, else
    its due time), a miss refused when the generator heard so (`t_done_mono`), any other connection established
    when its handshake completed (else at its SYN: what the schedule says a live server does)."""
    out = []
    for c in sorted(conns, key=lambda c: c["i"]):
        if c.get("protocol", "tcp") != "tcp":
            continue
        t = float(c["t_mono"] if c.get("t_mono") is not None else c["due_mono"])
        fail = bool(c.get("miss"))
        done = c.get("t_done_mono") if fail else c.get("t_established_mono")
        out.append({"i": c["i"], "t_mono": t, "src": SRC, "dst": c["dst"], "sport": c.get("sport"),
                    "dport": c.get("dport"), "outcome": "refused" if fail else "connected",
                    "t_done_mono": float(done) if done is not None else t})
    return out


def schedule_attempts(conns: Iterable[Any]) -> list[dict[str, Any]]:
    """A workload schedule (workload.schedule.Conn) as TRW attempts: every answer at once."""
    return [{"i": c.i, "t_mono": c.t, "src": SRC, "dst": c.addr, "dport": c.port,
             "outcome": "refused" if c.miss else "connected", "t_done_mono": c.t}
            for c in conns if c.protocol == "tcp"]


def trw_block(attempts: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *, t0: float | None = None
              ) -> dict[str, Any]:
    """TRW's block of one host from its attempts (`trw_attempts`, `schedule_attempts`): `blocked_s` after `t0`
    (default: its first attempt; None: never blocked), the connection whose failure blocked (`block_conn`), and
    the first contacts' failures and successes up to then."""
    from mechanisms.trw.core import TrwConfig
    from mechanisms.trw.model import replay_attempts

    keys = ("theta0", "theta1", "alpha", "beta", "timeout_s")
    if not attempts:
        return {"blocked_s": None, "block_conn": None, "failures": 0, "successes": 0}
    rep = replay_attempts(attempts, TrwConfig(**{k: params[k] for k in keys if k in params}))
    sp = rep.sources[SRC]
    start = min(float(a["t_mono"]) for a in attempts) if t0 is None else t0
    order = sorted(attempts, key=lambda a: a["t_mono"])
    conn = None if sp.block_attempt is None else order[sp.block_attempt].get("i")
    return {"blocked_s": None if sp.blocked_at is None else sp.blocked_at - start, "block_conn": conn,
            "failures": sp.failures, "successes": sp.successes}


def survival(block_s: Sequence[float | None], horizon_s: float) -> list[tuple[float, float]]:
    """The share of hosts not yet blocked against time: (0, 1) and a step down by 1/n at each host's first
    block (hosts never blocked stay in to `horizon_s`), ending at (`horizon_s`, the share never blocked)."""
    n = len(block_s)
    if n == 0:
        return []
    left, out = n, [(0.0, 1.0)]
    for t in sorted(float(t) for t in block_s if t is not None):
        left -= 1
        out.append((t, left / n))
    out.append((max(horizon_s, out[-1][0]), left / n))
    return out


def fp_figures(hosts: Sequence[Mapping[str, Any]], span_s: float) -> dict[str, Any]:
    """Over hosts ({"t_block_s": first false block or None, optional "exposure_s"}): how many, how many falsely
    blocked, the rate, the host-hours of benign use (to the block, else `span_s`) and the blocks per host-hour,
    the survival curve."""
    n = len(hosts)
    times = [h.get("t_block_s") for h in hosts]
    k = sum(1 for t in times if t is not None)
    exposure = math.fsum(float(h["exposure_s"]) if h.get("exposure_s") is not None else
                         max(0.0, min(float(t), span_s)) if t is not None else span_s
                         for h, t in zip(hosts, times, strict=True))
    return {"hosts": n, "false_block_hosts": k, "fp_rate": k / n if n else None,
            "host_hours": exposure / HOUR_S, "fp_per_host_hour": k / (exposure / HOUR_S) if exposure > 0 else None,
            "survival": survival(times, span_s)}


def pooled(per_trial: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several trials' `fp` figures (repeats of one group) as one: hosts and blocks summed, the rate and the
    blocks per host-hour over the sum (not a mean of rates)."""
    fs = [f for f in per_trial if f and f.get("hosts")]
    n = sum(int(f["hosts"]) for f in fs)
    k = sum(int(f["false_block_hosts"]) for f in fs)
    hours = math.fsum(float(f.get("host_hours") or 0.0) for f in fs)
    return {"hosts": n if fs else None, "false_block_hosts": k if fs else None,
            "fp_rate": k / n if n else None, "fp_per_host_hour": k / hours if hours > 0 else None}
