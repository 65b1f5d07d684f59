"""A stopping-speed trial with the host in use (issue 17): the benign workload runs on the infected blade
beside the worm, so a mechanism's stopping speed is measured as on the paper's hosts and the benign cost of
the same setting is measured in the same trial.

Steps (a `TrialRun`; the benign trial's helpers for the workload's servers and session): capture, mechanism,
worm servers and the workload's servers on the first `servers` targets start (in parallel, each watched); the
benign session starts on the infected blade (a watched service that ends by itself); after `benign.lead_s` of
benign use the injector triggers the worm as in every stopping-speed trial — the lead replaces the synthetic
working-set fill (state: full): the host's own traffic fills it; the stop condition as always, then the session
runs to its end (bounded); everything stops and is collected, benign.jsonl beside the worm's logs.
Evaluation: the worm's figures from the wire exactly as a trial without benign traffic (its port), the benign
connections joined with the capture (analysis.benign) into trials/<id>/benign.csv, split at the worm's first
attempt; for williamson, one model of both (analysis.wormbenign.combined_model) judges both.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from pathlib import Path

from orchestrator.analysis import benign as ab
from orchestrator.analysis import wormbenign as wb
from orchestrator.atomic import atomic_write_json
from orchestrator.errors import ProcessDied, TestbedError
from orchestrator.experiment import agreement
from orchestrator.experiment.benign import (
    CLIENT,
    ROW_KEYS,
    SERVER,
    BenignTrial,
    allow_list,
    session_args,
)
from orchestrator.experiment.benign import write_rows as benign_write_rows
from orchestrator.experiment.evaluate import evaluate
from orchestrator.experiment.record import Evaluation, TrialRecord, TrialSpec
from orchestrator.experiment.setup import Setup, lab_ip
from orchestrator.experiment.trial import TrialRun
from orchestrator.experiment.watch import Death, service
from orchestrator.lab.fanout import parallel
from orchestrator.lab.programs import HostPlace
from testworm.eventlog import read_events
from throttle.model import read_worm_log
from workload import pcap as wpcap
from workload.analysis import attempts_on_wire

SESSION_SLACK_S = 5.0      # past the session's own end (schedule + timeout) before it is stopped anyway


def run_trial(st: Setup, t: TrialSpec) -> TrialRecord:
    """A worm trial with benign traffic beside it; never raises for a trial that fails (its record says why)."""
    return WormBenignTrial(dataclasses.replace(st, normal=[]), t).run()


class WormBenignTrial(TrialRun):
    """A stopping-speed trial whose infected host runs the benign workload, from `lead_s` before the worm."""

    def __init__(self, st: Setup, t: TrialSpec):
        super().__init__(st, t)
        self.bt = BenignTrial(st, t)        # its helpers: the workload's servers, their directories
        self.bt.watch = self.watch
        for n in self.bt.wdir:
            self.watch.places.setdefault(n, HostPlace(self.h, n))
        self.run_log = f"{self.bt.wdir[st.infected]}/run.jsonl"
        self.session_end: float | None = None
        self.rec.extra |= {"benign": True}     # its setting: the runner's (benign.setting_extra)

    def reset(self) -> None:
        super().reset()
        h, bt = self.h, self.bt
        parallel([lambda n=n: h.stop(n, SERVER, timeout=5) for n in bt.wl]
                 + [lambda: h.stop(self.st.infected, CLIENT, timeout=5)]
                 + [lambda n=n, d=d: h.sh(n, f"rm -rf {shlex.quote(d)}", timeout=15).check()
                    for n, d in bt.wdir.items()])

    def start(self) -> None:
        super().start()
        parallel([lambda n=n, ip=ip: self.bt.start_workload_server(n, ip)
                  for n, ip in zip(self.bt.wl, self.bt.ips, strict=True)])
        self.phase("start_benign")

    def fill_working_set(self) -> None:
        """The benign session, `lead_s` before the worm: the host's own traffic fills the working set."""
        st, h, b = self.st, self.h, self.st.exp.spec.benign
        assert b is not None
        d = self.bt.wdir[st.infected]
        trace = None
        if self.bt.trace is not None:
            trace = f"{d}/trace{self.bt.trace.suffix}"
            h.sh(st.infected, f"mkdir -p {shlex.quote(d)}", timeout=15).check()
            h.access.put(st.infected, self.bt.trace, trace)
        assert b.rate is not None
        args = session_args(st, dataclasses.replace(self.t, rate=b.rate), trace)
        argv = h.module_argv(st.infected, "workload", "run", "--servers", *self.bt.ips, *args,
                             "--allow", *allow_list(st, self.bt.ips), "--lab-ranges", *st.exp_ranges,
                             "--log", self.run_log, "--timeout", f"{b.timeout_s:g}")
        h.sh(st.infected, f"mkdir -p {shlex.quote(d)}", timeout=15).check()
        h.start(st.infected, CLIENT, argv, log=f"{d}/run.log")
        self.watch.add(dataclasses.replace(service(st.infected, h.prefix(st.infected), CLIENT,
                                                   "the benign session", log=f"{d}/run.log"), ends_itself=True))
        place = HostPlace(h, st.infected)
        deadline = time.monotonic() + 10.0
        while not place.contains(self.run_log, '"event": "start"'):
            if time.monotonic() > deadline:
                raise TestbedError(f"the benign session on {st.infected} did not start within 10 s")
            time.sleep(0.05)
        started = time.monotonic()
        self.session_end = started + b.duration_s + b.timeout_s + SESSION_SLACK_S
        self.phase("session_start")
        while (left := b.lead_s - (time.monotonic() - started)) > 0:   # the lead, watched
            deaths, _ = self.watch.poll()
            if deaths:
                raise ProcessDied(deaths)
            time.sleep(min(left, 0.5))
        self.rec.extra["benign_lead_s"] = round(time.monotonic() - started, 3)
        super().fill_working_set()      # st.normal is empty: only the throttle's `state` line, as the worm meets it
        self.phase("lead")

    def wait(self) -> list[Death]:
        """The worm's stop condition as always; then the benign session to its own end (bounded)."""
        died = super().wait()
        if died or self.rec.status == "interrupted":
            return died
        place = HostPlace(self.h, self.st.infected)
        while not place.contains(self.run_log, '"event": "stop"'):
            if self.session_end is None or time.monotonic() > self.session_end or self.st.stop.is_set():
                break
            time.sleep(0.3)
        self.phase("session_end")
        return died

    def stop_and_collect(self, died: list[Death]) -> dict[str, Path | None]:
        files = super().stop_and_collect(died)
        files["benign_log"] = log = self.tdir / "benign.jsonl"
        self.h.access.get(self.st.infected, self.run_log, log)
        self.rec.files = {k: str(Path(v).relative_to(self.st.run.path)) for k, v in files.items() if v}
        return files

    def evaluate(self, files: dict[str, Path | None]) -> Evaluation:
        ev = evaluate(self.st, self.t, files, self.tdir, end_wall=self.ended)
        return beside(self.st, self.t, files, self.tdir, ev)


def beside(st: Setup, t: TrialSpec, files: dict[str, Path | None], tdir: Path, ev: Evaluation) -> Evaluation:
    """The worm trial's evaluation with the benign traffic beside it: benign.csv, the benign figures before and
    after the worm's first attempt, and for williamson the combined model judging both axes."""
    log, cap, worm_log = files.get("benign_log"), files.get("pcap"), files.get("worm_log")
    if not log or not Path(log).exists():
        raise TestbedError(f"the benign session on {st.infected} left no connection log")
    assert cap is not None and worm_log is not None
    _, conns, stop = ab.session(read_events(str(log)))
    rows = ab.measured_rows(conns, attempts_on_wire(wpcap.read_packets(str(cap))))
    first = ev.measured.get("first_attempt_wall")
    before, after = wb.split(rows, first)
    b = st.exp.spec.benign
    ev.measured |= wb.figures(before, after, b.rate if b else None)
    m, src = st.mech, lab_ip(st.lab, st.infected, st.segment)
    benign_ok = None
    if st.throttled and m is not None and ev.model is not None:
        lines = Path(worm_log).read_text().splitlines()
        targets, _ = agreement.worm_targets(read_worm_log(lines), src=src)
        cm = wb.combined_model(conns, lines, m.params, src=src, placement=m.placement, retransmit=st.retransmit,
                               protocol=t.protocol, targets=targets)
        tol = st.tolerance
        bag = ab.agreement(rows, cm, abs_s=tol["stop_abs_s"], rel=tol["stop_rel"],
                           observed_until_wall=(stop or {}).get("t_wall"))
        alone = {k: ev.model.get(k) for k in ("stop_s", "out_before_block")}
        model = {k: v for k, v in ev.model.items() if k != "orderings"} | {
            "stop_s": cm["stop_s"], "blocked": cm["blocked"], "out_before_block": cm["out_before_block"],
            "worm_alone": alone, "with_benign": True} | wb.model_figures(cm, before, after)
        verdict = agreement.judge(ev.measured, model, **tol)
        benign_ok = bool(bag["ok"])
        verdict["benign"] = bag
        verdict["worm_ok"] = verdict["ok"]
        verdict["ok"] = bool(verdict["ok"] and benign_ok)
        ev = dataclasses.replace(ev, model=model, agreement=verdict)
    write_rows(tdir / "benign.csv", rows, first)
    atomic_write_json(tdir / "benign-analysis.json", {"measured": {k: v for k, v in ev.measured.items()
                                                                   if k.startswith("benign_")},
                                                      "benign_agreement": (ev.agreement or {}).get("benign"),
                                                      "worm_first_attempt_wall": first})
    return ev


def write_rows(path: Path, rows: list[dict], first_worm_wall: float | None) -> None:
    """benign.csv: the benign trial's columns, and `phase` (before or during the worm, as `wb.split` puts it)."""
    before, _ = wb.split(rows, first_worm_wall)
    ids = {id(r) for r in before}
    for r in rows:
        r["phase"] = "before" if id(r) in ids else "attack"
    benign_write_rows(path, rows, (*ROW_KEYS, "phase"))
