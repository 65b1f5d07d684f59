"""What the analysis of a trial produces, as types: its settings (where the sniffer stands, which clock),
the stopping-speed metrics of one infected source, a cross-check finding, and the whole result."""

from __future__ import annotations

from dataclasses import dataclass, field

SNIFFER_POSITIONS = ("after", "before")  # where the capture is taken relative to the throttle
CLOCKS = ("auto", "mono", "wall")
SAME_KERNEL_S = 1.0  # logs whose (t_wall - t_mono) offsets differ by less than this share one monotonic clock



@dataclass(frozen=True)
class MetricsSettings:
    """`sniffer`: "after" (the capture sees only what left the throttle: host placement) or "before"
    (it sees the worm's traffic before the throttle: gateway and wire placements); None = from the throttle
    log's `mode` (host -> after, gateway/wire -> before), "after" when unknown.
    `tolerance_s`: how far apart in time a log line and a packet (or a worm line and a throttle line) may
    be and still be the same packet. `clock`: "auto", "mono" or "wall" for worm-vs-throttle times."""

    sniffer: str | None = None
    tolerance_s: float = 0.25
    clock: str = "auto"
    max_examples: int = 5

    def __post_init__(self) -> None:
        if self.sniffer is not None and self.sniffer not in SNIFFER_POSITIONS:
            raise ValueError(f"sniffer position {self.sniffer!r}: expected one of {', '.join(SNIFFER_POSITIONS)}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock {self.clock!r}: expected one of {', '.join(CLOCKS)}")
        if not self.tolerance_s >= 0:
            raise ValueError("tolerance_s must be >= 0")


@dataclass
class Finding:
    """A disagreement or gap found by a check. severity: "error" (a check failed: the numbers of this trial
    are in doubt), "warning" (something unexpected or incomplete), "info" (how the analysis was done)."""

    code: str
    severity: str
    message: str
    count: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SourceMetrics:
    """Everything measured about one infected source. Times in seconds; None where a witness is missing."""

    src: str
    # worm log
    first_attempt_mono: float | None = None
    first_attempt_wall: float | None = None
    first_attempt_basis: str | None = None  # "worm_log" | "capture" (no worm log given)
    worm_attempts: int = 0
    worm_attempts_before_block: int | None = None
    worm_distinct_destinations: int = 0
    worm_scan_rate: float | None = None  # attempts per second, first to last attempt
    requested_rate: float | None = None
    # throttle log
    blocked: bool = False
    blocked_mono: float | None = None
    blocked_wall: float | None = None
    blocked_queue_len: int | None = None
    stopping_time_s: float | None = None  # block minus first attempt
    stopping_time_clock: str | None = None  # "mono" | "wall"
    throttle_events: dict[str, int] = field(default_factory=dict)
    throttle_emitted_before_block: int | None = None  # passed + released, by the throttle's own account
    max_queue_len: int | None = None
    # capture
    wire_attempts: int = 0  # SYN packets (retransmissions included) and UDP attempts
    wire_new_attempts: int = 0  # retransmissions excluded
    wire_attempts_before_block: int | None = None
    wire_new_attempts_before_block: int | None = None
    wire_attempts_after_block: int | None = None
    wire_distinct_destinations: int = 0
    wire_distinct_destinations_before_block: int | None = None
    wire_scan_rate: float | None = None  # new attempts per second; only when the sniffer is before the throttle
    wire_first_ts: float | None = None
    wire_last_ts: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class MetricsResult:
    sniffer: str
    clock: str
    tolerance_s: float
    sources: list[SourceMetrics]
    findings: list[Finding]

    def to_dict(self) -> dict:
        return {"settings": {"sniffer": self.sniffer, "clock": self.clock, "tolerance_s": self.tolerance_s},
                "sources": [s.to_dict() for s in self.sources]}
