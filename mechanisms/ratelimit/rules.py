"""The rate limiter: an nftables meter on new connections per source — no daemon, no event log.

One table of its own, `ip wtb_ratelimit`, with a dynamic set keyed by source address whose every element
carries a token bucket (`limit rate over N/second burst B packets`): a packet that opens a connection
(conntrack state new: a TCP SYN before any answer, its retransmissions included, or a UDP datagram of a new
flow) beyond the bucket is dropped. Host placement hooks output (`oifname != "lo"`, or only `IF`); gateway
placement hooks forward (one bucket per source it forwards for, or only those arriving on `IF`).

Measured on this kernel (tests/mechanisms/test_ratelimit_apply.py): the bucket of a new source starts full
with `burst` packets and refills at `new_per_s`; what it lets out is what `model.py` predicts.

`render()` is pure; `apply()` replaces the table in one `nft -f` transaction (so exactly one exists),
`clear()` deletes it.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

TABLE = "wtb_ratelimit"
MARKER = "wtb-ratelimit"
PLACEMENTS = ("host", "gateway")
PROTOCOLS = ("tcp", "udp")
UNITS = (("second", 1), ("minute", 60), ("hour", 3600))


class RateLimitError(Exception):
    """The message is meant for a user."""


class ConfigError(RateLimitError, ValueError):
    """An invalid parameter (exit 2)."""


@dataclass(frozen=True)
class RateLimitConfig:
    new_per_s: float = 2.0           # new connections a source may open per second, in the long run
    burst: int = 5                   # bucket size: new connections a fresh source may open at once
    placement: str = "host"
    protocols: tuple[str, ...] = ("tcp", "udp")
    interface: str | None = None

    def __post_init__(self) -> None:
        r = self.new_per_s
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
            raise ConfigError(f"new_per_s must be a finite number > 0, got {r!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or not 1 <= self.burst <= 1_000_000:
            raise ConfigError(f"burst must be an integer in 1..1000000, got {self.burst!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"unknown placement {self.placement!r}; known: {', '.join(PLACEMENTS)}")
        protos = tuple(self.protocols)
        object.__setattr__(self, "protocols", protos)
        if not protos or any(p not in PROTOCOLS for p in protos) or len(set(protos)) != len(protos):
            raise ConfigError(f"protocols must be a non-empty subset of tcp,udp, got {','.join(protos)}")
        i = self.interface
        if i is not None and not (0 < len(i) < 16 and all(c.isalnum() or c in "-_.@" for c in i)):
            raise ConfigError(f"bad interface name {i!r}")
        self.nft_rate()

    def nft_rate(self) -> str:
        """`N/second` (or /minute, /hour when new_per_s is a fraction of a whole rate per minute or hour)."""
        f = Fraction(self.new_per_s).limit_denominator(3600)
        for unit, secs in UNITS:
            n = f * secs
            if n.denominator == 1 and abs(float(n) - self.new_per_s * secs) < 1e-9 * secs:
                return f"{n.numerator}/{unit}"
        raise ConfigError(f"new_per_s {self.new_per_s!r} is not a whole number per second, minute or hour "
                          "(nftables' limit rates are integers)")

    def to_dict(self) -> dict[str, Any]:
        return {"new_per_s": self.new_per_s, "burst": self.burst, "placement": self.placement,
                "protocols": list(self.protocols), "interface": self.interface}


def render(c: RateLimitConfig) -> str:
    """The table as an `nft -f` script that replaces any earlier one (add + delete + define, one transaction)."""
    hook = "output" if c.placement == "host" else "forward"
    if c.placement == "host":
        skip = f'oifname != "{c.interface}" accept' if c.interface else 'oifname "lo" accept'
    else:
        skip = f'iifname != "{c.interface}" accept' if c.interface else ""
    protos = c.protocols[0] if len(c.protocols) == 1 else "{ " + ", ".join(c.protocols) + " }"
    body = [f"type filter hook {hook} priority filter; policy accept;"]
    if skip:
        body.append(skip)
    body.append(f"ct state new meta l4proto {protos} add @sources {{ ip saddr limit rate over {c.nft_rate()} "
                f'burst {c.burst} packets }} counter drop comment "{MARKER}"')
    chain = "\n".join(f"    {ln}" for ln in body)
    return (f"add table ip {TABLE}\ndelete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n"
            f"  set sources {{ type ipv4_addr; size 65535; flags dynamic; }}\n"
            f"  chain newconn {{\n{chain}\n  }}\n}}\n")


def _nft(script: str, what: str) -> None:
    if shutil.which("nft") is None:
        raise RateLimitError("nft not found: install nftables")
    try:
        cp = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise RateLimitError(f"nft did not finish {what} within 30 s") from None
    if cp.returncode != 0:
        detail = (cp.stderr or cp.stdout).strip().splitlines()
        hint = " (needs root / CAP_NET_ADMIN)" if any("Operation not permitted" in d for d in detail) else ""
        raise RateLimitError(f"nft failed {what} (exit {cp.returncode}){hint}: "
                             f"{detail[0] if detail else 'no message'}")


def apply(c: RateLimitConfig) -> None:
    _nft(render(c), "installing the rate limiter")


def clear() -> None:
    """Delete the table (nothing to do when there is none)."""
    _nft(f"add table ip {TABLE}\ndelete table ip {TABLE}\n", "removing the rate limiter")


def counters() -> dict[str, int] | None:
    """The drop rule's own counter (packets, bytes), or None without a table. For status only: figures come
    from the wire."""
    try:
        cp = subprocess.run(["nft", "list", "table", "ip", TABLE], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    if cp.returncode != 0:
        return None
    for ln in cp.stdout.splitlines():
        if MARKER in ln and "counter packets" in ln:
            w = ln.split()
            i = w.index("packets")
            return {"dropped_packets": int(w[i + 1]), "dropped_bytes": int(w[i + 3])}
    return None
