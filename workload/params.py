"""Validation of everything the workload is told: one path for the command line and for callers in Python.

Numbers go through testworm's `params.number` (the same messages: `--rate 0 out of range (must be > 0 and
<= 10000)`), addresses and CIDRs through testworm's strict parsers, and the range interlocks are testworm's:
lab ranges inside 198.18.0.0/15, the allow-list inside the lab ranges, every server inside the allow-list.
Any problem is a UsageError / InterlockError (exit 2) with a one-line message. The hard limits below are not
options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from testworm import interlocks
from testworm.addrs import AddressSet, ip_int, ip_str
from testworm.errors import UsageError
from testworm.params import DEFAULT_LAB_RANGES, number

from .schedule import ARRIVALS, POPULARITIES, GenSpec

MAX_RATE = 10_000.0             # connections per second
MAX_DURATION_S = 3600.0
MAX_CONNECTIONS = 1_000_000
MAX_BURST = 100
MAX_SERVERS = 4096
MAX_IN_FLIGHT = 4096
MAX_TIMEOUT_S = 60.0
MAX_ANSWER_BYTES = 1 << 20
MAX_ZIPF_S = 10.0


@dataclass(frozen=True)
class Scope:
    """Where the workload may reach: the lab ranges and the allow-list (both checked by the interlocks)."""

    lab: AddressSet
    allow: AddressSet

    def check_servers(self, servers: Sequence[str]) -> None:
        interlocks.check_targets(AddressSet((ip_int(s), ip_int(s) + 1) for s in servers), self.allow,
                                 "servers")


def scope(allow: Sequence[str] | None, lab_ranges: Sequence[str] | None) -> Scope:
    lab = AddressSet.from_cidrs(list(lab_ranges or DEFAULT_LAB_RANGES), "--lab-ranges")
    interlocks.check_lab_ranges(lab)
    if not allow:
        raise UsageError("--allow is required: the CIDRs the workload may connect to")
    allow_set = AddressSet.from_cidrs(list(allow), "--allow")
    interlocks.check_allow(allow_set, lab)
    return Scope(lab, allow_set)


def num(value, option: str, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False):
    """One number (a string from the command line, or a number) → int/float, with testworm's messages."""
    key = option.removeprefix("--").replace("-", "_")
    return number({key: value}, key, lo, hi, integer=integer, lo_open=lo_open)


def port(value, option: str) -> int:
    return num(value, option, 1, 65535, integer=True)


def choice(value: str, option: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(allowed)}")
    return value


def servers(values: Sequence[str]) -> tuple[str, ...]:
    """Server addresses (IPv4, in popularity order); commas split too. Duplicates are refused (a duplicate
    would silently change the popularity)."""
    out = [ip_str(ip_int(x)) for v in values for x in v.split(",") if x.strip()]
    if not out:
        raise UsageError("--servers: no server addresses")
    if len(out) > MAX_SERVERS:
        raise UsageError(f"--servers: {len(out)} addresses (at most {MAX_SERVERS})")
    seen: set[str] = set()
    for a in out:
        if a in seen:
            raise UsageError(f"--servers: {a} is given twice")
        seen.add(a)
    return tuple(out)


def gen_spec(*, servers: Sequence[str], rate, duration, burst="1", popularity="zipf", zipf_s="1",
             arrivals="poisson", udp_fraction="0", tcp_port="8080", udp_port="5353", seed="0",
             max_connections=str(MAX_CONNECTIONS), stale: Sequence[str] = (), miss="0") -> GenSpec:
    if rate is None:
        raise UsageError("--rate is required (new connections per second), or give --trace")
    if duration is None:
        raise UsageError("--duration is required (seconds of traffic)")
    miss_f = num(miss, "--miss", 0, 1)
    stale_t = stale_addresses(stale, servers)
    if miss_f > 0 and not stale_t:
        raise UsageError("--miss needs --stale: the addresses without a server that missed connections go to")
    return GenSpec(
        servers=tuple(servers),
        rate=num(rate, "--rate", 0, MAX_RATE, lo_open=True),
        duration_s=num(duration, "--duration", 0, MAX_DURATION_S, lo_open=True),
        burst=num(burst, "--burst", 1, MAX_BURST, integer=True),
        popularity=choice(popularity, "--popularity", POPULARITIES),
        zipf_s=num(zipf_s, "--zipf-s", 0, MAX_ZIPF_S),
        arrivals=choice(arrivals, "--arrivals", ARRIVALS),
        udp_fraction=num(udp_fraction, "--udp-fraction", 0, 1),
        tcp_port=port(tcp_port, "--tcp-port"),
        udp_port=port(udp_port, "--udp-port"),
        seed=num(seed, "--seed", 0, 2 ** 63 - 1, integer=True),
        max_connections=num(max_connections, "--max-connections", 1, MAX_CONNECTIONS, integer=True),
        stale=stale_t, miss=miss_f)


def stale_addresses(values: Sequence[str], servers: Sequence[str]) -> tuple[str, ...]:
    """The addresses a missed connection goes to (IPv4; commas split too): none twice, none a server's."""
    out = [ip_str(ip_int(x)) for v in values for x in v.split(",") if x.strip()]
    if len(out) > MAX_SERVERS:
        raise UsageError(f"--stale: {len(out)} addresses (at most {MAX_SERVERS})")
    seen = set(servers)
    for a in out:
        if a in seen:
            raise UsageError(f"--stale: {a} is a server's address or given twice")
        seen.add(a)
    return tuple(out)
