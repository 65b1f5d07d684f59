"""What a trial is and what it leaves: `TrialSpec` (one protocol, rate and repeat of a sweep) and
`TrialRecord`, the typed record a trial fills in step by step and trials.jsonl holds (`to_dict`).

A mechanism or an experiment kind that measures more puts it in `extra` (its own keys, written after the
standard ones) or in `Evaluation.measured`; the keys below keep their meaning for the summary, the index and
the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TrialStatus = Literal["ok", "timeout", "error", "interrupted"]


@dataclass(frozen=True)
class TrialSpec:
    index: int
    protocol: str
    rate: float
    repeat: int
    mechanism: str | None = None     # named in the id (None: an experiment of `throttle:` or `kind:`, one mechanism)
    deploy: str | None = None        # a spread's deploy condition (0, 0.5, 1, gateway), named in the id

    @property
    def id(self) -> str:
        head = f"{self.mechanism}-" if self.mechanism else ""
        head += f"d{self.deploy}-" if self.deploy is not None else ""
        return f"{head}{self.protocol}-r{self.rate:g}-{self.repeat}".replace(".", "_")


@dataclass
class Evaluation:
    """A trial's figures from its files: measured on the wire, the model's prediction, and their agreement."""

    measured: dict[str, Any]
    findings: list[dict[str, Any]]
    model: dict[str, Any] | None
    agreement: dict[str, Any]
    worm_throttle_clock_offset_s: float | None = None    # set when worm and throttle run on different kernels

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.worm_throttle_clock_offset_s is not None:
            out["worm_throttle_clock_offset_s"] = self.worm_throttle_clock_offset_s
        return out | {"measured": self.measured, "findings": self.findings, "model": self.model,
                      "agreement": self.agreement}


@dataclass
class TrialRecord:
    trial: str
    index: int
    protocol: str
    rate: float
    repeat: int
    state: str                              # the experiment's state: empty or full (working set)
    initial_working_set: list[str]
    placement: str | None                   # the mechanism's (None: no mechanism)
    fail_open: bool | None
    started: float
    mechanism: str | None = None            # its name (none: the control group)
    status: TrialStatus = "error"           # until the trial says otherwise
    reason: str | None = None
    phases: dict[str, float] = field(default_factory=dict)     # seconds per step: reset, start, trigger, …
    triggered: float | None = None
    capture: dict[str, Any] | None = None                      # the capture's own counts
    collect_error: str | None = None
    files: dict[str, str] | None = None                        # relative to the run directory
    died: list[dict[str, Any]] | None = None                   # the processes whose death made it an error
    evaluation: Evaluation | None = None
    watched: list[str] = field(default_factory=list)
    duration_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _OPTIONAL = ("triggered", "capture", "collect_error", "files", "died")

    @property
    def measured(self) -> dict[str, Any]:
        return self.evaluation.measured if self.evaluation else {}

    def to_dict(self) -> dict[str, Any]:
        """The trials.jsonl record: the same keys, in the same order, as the trial set them."""
        out: dict[str, Any] = {k: getattr(self, k) for k in (
            "trial", "index", "mechanism", "protocol", "rate", "repeat", "state", "initial_working_set",
            "placement", "fail_open", "started", "status", "reason", "phases")}
        out |= {k: getattr(self, k) for k in self._OPTIONAL if getattr(self, k) is not None}
        if self.evaluation is not None:
            out |= self.evaluation.to_dict()
        out |= {"watched": self.watched, "duration_s": self.duration_s}
        return out | self.extra
