"""Scan parameters: one validation path for the command line and for a trigger arriving on the wire.

`resolve(raw)` merges built-in defaults < profile < explicit values, checks every type and bound, parses the
CIDR lists and applies the range interlocks (lab ranges inside 198.18.0.0/15, allow ⊆ lab ranges,
targets ⊆ allow). Any problem is a UsageError/InterlockError with a one-line message. Hard limits here
cannot be raised by options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import interlocks
from .addrs import AddressSet, ip_int
from .errors import UsageError
from .profiles import profile
from .strategies import START_KEYWORDS, STRATEGIES

DEFAULT_LAB_RANGES = ("198.18.0.0/15",)

# Hard limits: not options, not lab-file settings.
MAX_RATE = 100_000.0
MAX_LIFETIME_S = 3600.0
MAX_ATTEMPTS = 10_000_000
MAX_GENERATIONS = 64       # deep enough for a 200-host spread (~10–20 hops), and still a bound
MAX_IN_FLIGHT = 4096
MAX_CONNECT_TIMEOUT_S = 60.0
MAX_BURST = 1000
MAX_UDP_SIZE = 1400
MAX_LIST = 1024  # CIDRs in a list, addresses in a hit list

DEFAULTS: dict[str, Any] = {
    "protocol": "tcp",
    "strategy": "sequential",
    "seed": 0,
    "start": None,
    "hit_list": [],
    "local_weights": [0.5, 0.25, 0.25],
    "burst": 1,
    "max_attempts": 100_000,
    "lifetime_s": 300.0,
    "connect_timeout_s": 3.0,
    "max_in_flight": 256,
    "udp_size": 32,
    "generation": 0,
    "max_generations": 3,
    "lab_ranges": list(DEFAULT_LAB_RANGES),
    "profile": None,
    "targets": None,
}
KEYS = ("rate", "protocol", "port", "strategy", "seed", "targets", "allow", "lab_ranges", "start", "hit_list",
        "local_weights", "burst", "max_attempts", "lifetime_s", "connect_timeout_s", "max_in_flight",
        "udp_size", "profile", "generation", "max_generations")


@dataclass(frozen=True)
class ScanParams:
    rate: float
    protocol: str
    port: int
    strategy: str
    seed: int
    targets: AddressSet
    allow: AddressSet
    lab_ranges: AddressSet
    start: str | int | None
    hit_list: tuple[int, ...]
    local_weights: tuple[float, float, float]
    burst: int
    max_attempts: int
    lifetime_s: float
    connect_timeout_s: float
    max_in_flight: int
    udp_size: int
    profile: str | None
    generation: int
    max_generations: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters: the `params` of the log's start record, and a trigger's `params`."""
        from .addrs import ip_str
        return {
            "rate": self.rate, "protocol": self.protocol, "port": self.port, "strategy": self.strategy,
            "seed": self.seed, "targets": self.targets.cidrs(), "allow": self.allow.cidrs(),
            "lab_ranges": self.lab_ranges.cidrs(),
            "start": ip_str(self.start) if isinstance(self.start, int) else self.start,
            "hit_list": [ip_str(a) for a in self.hit_list], "local_weights": list(self.local_weights),
            "burst": self.burst, "max_attempts": self.max_attempts, "lifetime_s": self.lifetime_s,
            "connect_timeout_s": self.connect_timeout_s, "max_in_flight": self.max_in_flight,
            "udp_size": self.udp_size, "profile": self.profile, "generation": self.generation,
            "max_generations": self.max_generations,
        }


def option_name(key: str) -> str:
    """The command-line spelling of a parameter: lifetime_s → --lifetime, max_in_flight → --max-in-flight."""
    return "--" + key.removesuffix("_s").replace("_", "-")


def number(raw: dict, key: str, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False):
    v = raw[key]
    name = option_name(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        if isinstance(v, str):
            try:
                v = int(v)
            except ValueError:
                try:
                    v = float(v)
                except ValueError:
                    raise UsageError(f"{name} must be a number, not {v!r}") from None
        else:
            raise UsageError(f"{name} must be a number, not {v!r}")
    try:
        finite = math.isfinite(v)
    except OverflowError:  # an int too large for a float
        raise UsageError(f"{name} out of range") from None
    if not finite:
        raise UsageError(f"{name} must be finite, not {v!r}")
    if integer and (not isinstance(v, int) and not (isinstance(v, float) and v.is_integer())):
        raise UsageError(f"{name} must be a whole number, not {v!r}")
    if (v <= lo if lo_open else v < lo) or v > hi:
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise UsageError(f"{name} {v:g} out of range (must be {bound} and <= {hi:g})")
    return int(v) if integer else float(v)


def _str_list(raw: dict, key: str, what: str) -> list[str]:
    v = raw[key]
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise UsageError(f"{what} must be a list of strings")
    if len(v) > MAX_LIST:
        raise UsageError(f"{what} has {len(v)} entries (at most {MAX_LIST})")
    return [x for part in v for x in part.split(",") if x.strip()] if v else []


def resolve(explicit: dict[str, Any]) -> ScanParams:
    """Validate scan parameters (None values count as not given). Raises UsageError / InterlockError."""
    unknown = sorted(set(explicit) - set(KEYS))
    if unknown:
        raise UsageError(f"unknown scan parameter(s): {', '.join(unknown)}")
    given = {k: v for k, v in explicit.items() if v is not None}
    prof = given.get("profile")
    if prof is not None and not isinstance(prof, str):
        raise UsageError("--profile must be a name")
    raw = {**DEFAULTS, **profile(prof), **given}
    for key in ("rate", "port", "allow"):
        if raw.get(key) is None:
            raise UsageError(f"--{key} is required (or a --profile that sets it)" if key != "allow"
                             else "--allow is required: the allow-list of CIDRs the worm may scan")

    rate = number(raw, "rate", 0.0, MAX_RATE, lo_open=True)
    port = number(raw, "port", 1, 65535, integer=True)
    protocol = raw["protocol"]
    if protocol not in ("tcp", "udp"):
        raise UsageError(f"unknown protocol {protocol!r} (choose tcp or udp)")
    strategy = raw["strategy"]
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r} (choose one of {', '.join(STRATEGIES)})")
    seed = number(raw, "seed", 0, 2**63 - 1, integer=True)

    lab = AddressSet.from_cidrs(_str_list(raw, "lab_ranges", "--lab-ranges"), "--lab-ranges")
    allow = AddressSet.from_cidrs(_str_list(raw, "allow", "--allow"), "the allow-list (--allow)")
    interlocks.check_lab_ranges(lab)
    interlocks.check_allow(allow, lab)

    hits, targets = _targets(raw, strategy, allow)
    start = _start(raw, targets)
    weights = _weights(raw)

    p = ScanParams(
        rate=rate, protocol=protocol, port=port, strategy=strategy, seed=seed, targets=targets, allow=allow,
        lab_ranges=lab, start=start, hit_list=hits, local_weights=weights,  # type: ignore[arg-type]
        burst=number(raw, "burst", 1, MAX_BURST, integer=True),
        max_attempts=number(raw, "max_attempts", 1, MAX_ATTEMPTS, integer=True),
        lifetime_s=number(raw, "lifetime_s", 0.0, MAX_LIFETIME_S, lo_open=True),
        connect_timeout_s=number(raw, "connect_timeout_s", 0.0, MAX_CONNECT_TIMEOUT_S, lo_open=True),
        max_in_flight=number(raw, "max_in_flight", 1, MAX_IN_FLIGHT, integer=True),
        udp_size=number(raw, "udp_size", 0, MAX_UDP_SIZE, integer=True),
        profile=prof,
        generation=number(raw, "generation", 0, MAX_GENERATIONS, integer=True),
        max_generations=number(raw, "max_generations", 0, MAX_GENERATIONS, integer=True),
    )
    if p.generation > p.max_generations:
        raise UsageError(f"generation {p.generation} is beyond the bound --max-generations {p.max_generations}")
    return p


def _targets(raw: dict[str, Any], strategy: str, allow: AddressSet) -> tuple[tuple[int, ...], AddressSet]:
    """The hit list and the targets, each checked against the allow-list."""
    hits = tuple(ip_int(a) for a in _str_list(raw, "hit_list", "--hit-list"))
    if raw["targets"] is None:
        targets = AddressSet.from_addresses(hits) if strategy == "hit-list" and hits else allow
    else:
        targets = AddressSet.from_cidrs(_str_list(raw, "targets", "--targets"), "--targets")
    interlocks.check_targets(targets, allow, "--targets")
    if strategy == "hit-list":
        if not hits:
            raise UsageError("strategy hit-list needs --hit-list ADDR …")
        interlocks.check_targets(AddressSet.from_addresses(hits), allow, "--hit-list")
    return hits, targets


def _start(raw: dict[str, Any], targets: AddressSet) -> Any:
    """Where a scan starts: a keyword, or one of the targets (as an integer)."""
    start = raw["start"]
    if start is not None:
        if not isinstance(start, str):
            raise UsageError("--start must be an address or a keyword")
        if start not in START_KEYWORDS:
            start = ip_int(start)
            if start not in targets:
                raise UsageError(f"--start {raw['start']} is not one of the targets")
    return start


def _weights(raw: dict[str, Any]) -> tuple[float, ...]:
    """The local-preference weights (/16, /8, anywhere), normalised to sum to 1."""
    weights = raw["local_weights"]
    if isinstance(weights, str):
        weights = weights.split(",")
    try:
        weights = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise UsageError(f"--local-weights must be three numbers, not {raw['local_weights']!r}") from None
    if len(weights) != 3 or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise UsageError(f"--local-weights must be three non-negative numbers (/16,/8,anywhere), not {weights!r}")
    total = sum(weights)
    return tuple(w / total for w in weights)
