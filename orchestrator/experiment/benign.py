"""A trial of `kind: benign` (issue 17): the benign workload alone, beside the mechanism, judged from the wire.

Steps (a `TrialRun` with its own start, session and evaluation): capture, the mechanism and the workload's
servers on the lab's first `servers` targets start (in parallel, each watched); the generator runs its
session on the blade that carries the mechanism, to its end (bounded by its own lifetime); everything stops;
the capture, the mechanism's event log and the generator's connection log are collected; each connection's
delay is measured on the wire (orchestrator.analysis.benign), beside the williamson model's for the same
schedule, and every block of this host — which ran no worm — is a false block, with its time and cause.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import shlex
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from orchestrator.analysis import benign as ab
from orchestrator.analysis import falsepos
from orchestrator.atomic import atomic_write_json, atomic_write_text
from orchestrator.errors import TestbedError
from orchestrator.experiment import benignspec
from orchestrator.experiment.benignfp import evaluate_hosts, span_s
from orchestrator.experiment.record import Evaluation, TrialRecord, TrialSpec
from orchestrator.experiment.setup import Setup, lab_ip
from orchestrator.experiment.trial import TrialRun, reset, service_name
from orchestrator.experiment.watch import Death, service
from orchestrator.lab.fanout import parallel
from orchestrator.lab.programs import HostPlace
from testworm.eventlog import read_events
from workload import pcap as wpcap
from workload.analysis import attempts_on_wire

SERVER, CLIENT = "workload-server", "workload"
LISTEN_S = 10.0
ROW_KEYS = ("i", "t_sched", "protocol", "dst", "dport", "sport", "outcome", "wire_s", "model_wire_s", "model_fate",
            "queued_behind", "agree", "established_s", "answer_s", "retransmissions")


def run_trial(st: Setup, t: TrialSpec) -> TrialRecord:
    """One benign trial; never raises for a trial that fails (its record says why)."""
    return BenignTrial(st, t).run()


def setting(m) -> str:
    """A mechanism's parameters as one label (`working_set_size=5 release_period_s=1`), for rows and plots."""
    if m is None:
        return ""
    keys = ("working_set_size", "release_period_s", "delay_queue_limit") if m.name == "williamson" else sorted(m.params)
    return " ".join(f"{k}={m.params[k]:g}" if isinstance(m.params.get(k), float) else f"{k}={m.params[k]}"
                    for k in keys if k in m.params)


def setting_extra(m) -> dict[str, Any]:
    """What a trial's record carries of its mechanism's setting: the label and the parameters (rows, plots)."""
    return {"setting": setting(m), "params": dict(m.params) if m else {}}


def estimate_s(exp, t: TrialSpec) -> float:
    b = exp.spec.benign
    return b.duration_s + 4.0 if b else exp.spec.timeout_s


def servers_of(st: Setup) -> list[str]:
    b = st.exp.spec.benign
    assert b is not None
    return [h.name for h in st.lab.by_role("target")][:b.servers]


def allow_list(st: Setup, ips: list[str]) -> list[str]:
    """The experimental subnets that hold the workload's servers: all the generator may reach."""
    nets = [ipaddress.ip_network(s) for s in st.exp_ranges]
    return sorted({str(n) for n in nets for ip in ips if ipaddress.ip_address(ip) in n})


def session_args(st: Setup, t: TrialSpec, trace: str | None, *, host: int = 0, stale: Sequence[str] = ()) -> list[str]:
    """The generator's session: a replayed trace, or a schedule generated at the trial's rate (pure). Host k of
    `benign.hosts` follows its own schedule, seeded with the seed + k; `stale`: the addresses without a server
    that the `benign.miss` share of connections goes to."""
    b = st.exp.spec.benign
    assert b is not None
    miss = ["--miss", f"{b.miss:g}", "--stale", *stale] if b.miss > 0 and stale else []
    ports = ["--tcp-port", str(benignspec.TCP_PORT), "--udp-port", str(benignspec.UDP_PORT)]
    if trace is not None:
        return ["--trace", trace, "--trace-ports", "lab", *ports, *(["--wrap"] if b.wrap else [])]
    return ["--rate", f"{t.rate:g}", "--duration", f"{b.duration_s:g}", "--burst", str(b.burst),
            "--popularity", b.popularity, "--zipf-s", f"{b.zipf_s:g}", "--arrivals", b.arrivals,
            "--udp-fraction", "1" if t.protocol == "udp" else "0",
            "--seed", str((b.seed if b.seed is not None else st.exp.spec.seed) + host), *ports, *miss]


class BenignTrial(TrialRun):
    """A trial with the benign workload in place of the worm: on the `benign.hosts` blades at once, each
    carrying the mechanism (host 0 is the `infected:` blade, whose files keep their single-host names)."""

    def __init__(self, st: Setup, t: TrialSpec):
        super().__init__(dataclasses.replace(st, servers=[], normal=[]), t)
        h = self.h
        self.wl = servers_of(st)
        self.ips = [lab_ip(st.lab, s, st.segment) for s in self.wl]
        self.blades = benignspec.blades_of(st.exp.spec, st.lab) or [st.infected]
        self.stale = [lab_ip(st.lab, s, st.segment) for s in benignspec.stale_targets(st.exp.spec, st.lab)]
        self.wdir = {n: f"{h.prefix(n)}/run/benign/{t.id}" for n in dict.fromkeys([*self.blades, *self.wl])}
        for n in self.wdir:
            self.watch.places.setdefault(n, HostPlace(h, n))
        # the mechanism on every other host: a trial's mechanism steps of its own, sharing this one's watch
        self.others: dict[str, TrialRun] = {}
        if self.st.throttle is not None and self.st.mech is not None:
            for b in self.blades[1:]:
                iface = next(i.ifname for i in st.lab.host(b).interfaces if i.segment.startswith("experimental"))
                sub = TrialRun(dataclasses.replace(self.st, infected=b, throttle=HostPlace(h, b),
                                                   throttle_iface=iface), t)
                sub.watch = self.watch
                self.others[b] = sub
        self.rec.extra |= {"kind": "benign", "servers": len(self.wl)} | setting_extra(self.st.mech)
        if len(self.blades) > 1 or self.stale:
            self.rec.extra |= {"hosts": self.blades, "stale": self.stale}
        self.trace = benignspec.trace_path(st.exp)

    def reset(self) -> None:
        st, h = self.st, self.h
        def wipe(n: str, d: str) -> Callable[[], Any]:
            return lambda: h.sh(n, f"rm -rf {shlex.quote(d)}", timeout=15).check()

        def wipe_at(place: Any, old: str) -> Callable[[], Any]:
            return lambda: place.sh(f"rm -rf {old}", timeout=15).check()
        stale = [wipe(n, d) for n, d in self.wdir.items()]
        stop: list[Callable[[], Any]] = [partial(h.stop, n, SERVER, timeout=5) for n in self.wl]
        for run in [self, *self.others.values()]:
            if (place := run.st.throttle) is not None:
                old = " ".join(shlex.quote(p) for p in (run.mdir, run.tlog, run.terr) if p)
                stale.append(wipe_at(place, old))
                if run is not self and run.st.contained_by is not None and run.st.contained_by.daemon:
                    stop.append(partial(place.stop, service_name(run.st), timeout=5))
        reset(st, extra=[*stop, *stale])
        self.phase("reset")

    def start(self) -> None:
        st = self.st
        self.watch.add(self.capture)
        parallel([lambda n=n, ip=ip: self.start_workload_server(n, ip) for n, ip in zip(self.wl, self.ips, strict=True)]
                 + [self.start_mechanism, *(o.start_mechanism for o in self.others.values()),
                    lambda: self.cap.start(st.canary[0], st.canary[1])])
        self.phase("start")

    def stop_mechanism(self, check: bool = True) -> None:
        super().stop_mechanism(check)
        for o in self.others.values():
            o.stop_mechanism(check)

    def start_workload_server(self, srv: str, ip: str) -> None:
        b, h, d = self.st.exp.spec.benign, self.h, self.wdir[srv]
        assert b is not None
        h.sh(srv, f"mkdir -p {shlex.quote(d)}", timeout=15).check()
        argv = h.module_argv(srv, "workload", "serve", "--tcp", f"{ip}:{benignspec.TCP_PORT}",
                             "--udp", f"{ip}:{benignspec.UDP_PORT}", "--log", f"{d}/serve.jsonl",
                             "--lab-ranges", *self.st.exp_ranges,
                             "--lifetime", f"{b.duration_s + b.timeout_s + 120:g}")
        h.start(srv, SERVER, argv, log=f"{d}/serve.log")
        self.watch.add(service(srv, h.prefix(srv), SERVER, "the benign workload's servers", log=f"{d}/serve.log"))
        deadline = time.monotonic() + LISTEN_S
        while not HostPlace(h, srv).contains(f"{d}/serve.jsonl", '"listening"'):
            if time.monotonic() > deadline:
                raise TestbedError(f"the workload's servers on {srv} did not listen within {LISTEN_S:g} s")
            time.sleep(0.1)

    def fill_working_set(self) -> None:
        """Nothing: the benign session itself meets the mechanism from an empty state."""

    def trigger(self) -> None:
        """The generator's whole session on every host at once (each ends by itself)."""
        self.rec.triggered = time.time()
        parallel([lambda k=k, b=b: self.session(k, b) for k, b in enumerate(self.blades)])
        self.phase("session")

    def session(self, k: int, blade: str) -> None:
        """Host k's session on `blade`, to its end."""
        st, h, b = self.st, self.h, self.st.exp.spec.benign
        assert b is not None
        d = self.wdir[blade]
        trace = None
        if self.trace is not None:
            trace = f"{d}/trace{self.trace.suffix}"
            h.sh(blade, f"mkdir -p {shlex.quote(d)}", timeout=15).check()
            h.access.put(blade, self.trace, trace)
        argv = h.module_argv(blade, "workload", "run", "--servers", *self.ips,
                             *session_args(st, self.t, trace, host=k, stale=self.stale),
                             "--allow", *allow_list(st, [*self.ips, *self.stale]),
                             "--lab-ranges", *st.exp_ranges, "--log", f"{d}/run.jsonl",
                             "--timeout", f"{b.timeout_s:g}")
        r = h.access.run(blade, ["sh", "-c", f"mkdir -p {shlex.quote(d)} && exec \"$@\"", "sh", *argv],
                         timeout=b.duration_s + b.timeout_s + 3600 * (self.trace is not None) + 60)
        if not r.ok:
            raise TestbedError(f"the benign workload on {blade} failed (exit {r.exit_code}): "
                               f"{(r.stderr or r.stdout).strip()[-300:]}")

    def wait(self) -> list[Death]:
        deaths, _ = self.watch.poll(everywhere=True)
        self.rec.status, self.rec.reason = "ok", "the benign session ended"
        self.ended = time.time()
        self.phase("run")
        return deaths

    def stop_and_collect(self, died: list[Death]) -> dict[str, Path | None]:
        files = super().stop_and_collect(died)
        h, st = self.h, self.st
        files["benign_log"] = log = self.tdir / "benign.jsonl"
        h.access.get(st.infected, f"{self.wdir[st.infected]}/run.jsonl", log)

        def other_logs(b: str) -> None:       # host k's files beside host 0's, named by its blade
            files[f"benign_log:{b}"] = dest = self.tdir / f"benign-{b}.jsonl"
            h.access.get(b, f"{self.wdir[b]}/run.jsonl", dest)
            o = self.others.get(b)
            if o is not None and o.tlog and o.st.throttle is not None:
                files[f"mechanism_log:{b}"] = mdest = self.tdir / f"mechanism-{b}.jsonl"
                o.st.throttle.fetch(o.tlog, mdest)
        parallel([lambda b=b: other_logs(b) for b in self.blades[1:]])

        def serve_log(n: str) -> None:
            dest = self.tdir / f"benign-serve-{n}.jsonl"
            h.access.get(n, f"{self.wdir[n]}/serve.jsonl", dest)
            files[f"serve:{n}"] = dest
        parallel([lambda n=n: serve_log(n) for n in self.wl])
        self.rec.files = {k: str(Path(v).relative_to(self.st.run.path)) for k, v in files.items() if v}
        return files

    def evaluate(self, files: dict[str, Path | None]) -> Evaluation:
        if len(self.blades) > 1:
            return evaluate_hosts(self.st, self.t, files, self.tdir, self.blades, host_figures=host_figures,
                                  mechanism_events=mechanism_events)
        return evaluate(self.st, self.t, files, self.tdir)


def mechanism_events(files: dict[str, Path | None]) -> list[dict[str, Any]]:
    log = files.get("throttle_log") or files.get("mechanism_log")
    if not log:
        return []
    out = []
    for line in Path(log).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def evaluate(st: Setup, t: TrialSpec, files: dict[str, Path | None], tdir: Path) -> Evaluation:
    """The benign trial's figures: per-connection delays on the wire, the model's beside them, false blocks."""
    log, cap = files.get("benign_log"), files.get("pcap")
    if not log or not Path(log).exists():
        raise TestbedError(f"the benign workload on {st.infected} left no connection log")
    if cap is None:
        raise TestbedError(f"no capture was fetched from {st.sniffer}")
    wire = attempts_on_wire(wpcap.read_packets(str(cap)))
    f = host_figures(st, t, Path(log), mechanism_events(files), wire, tdir / "benign.csv")
    measured, pm, agree = f["measured"], f["model"], f["agree"]
    measured["fp"] = falsepos.fp_figures([f["fp_host"]], span_s(st))
    atomic_write_json(tdir / "analysis.json", {"measured": measured, "model": pm, "agreement": agree})
    return Evaluation(measured, f["findings"], pm, agree or {"ok": None})


def host_figures(st: Setup, t: TrialSpec, log: Path, events: list[dict[str, Any]], wire, csv_path: Path,
                 ) -> dict[str, Any]:
    """One host's connections joined with the wire (written to `csv_path`), its false blocks from its
    mechanism's events, the model's delays and block beside them (williamson: the throttle's replay; trw: the
    sequential test over which first contacts failed), and their agreement."""
    start, conns, stop = ab.session(read_events(str(log)))
    rows = ab.measured_rows(conns, wire)
    m = st.mech
    first = min((c["due_wall"] for c in conns), default=None)
    blocks = ab.false_blocks(events, start_wall=first)
    model = agree = pm = None
    tol = st.tolerance
    if st.throttled and m is not None:
        model = ab.williamson_model(conns, m.params, placement=m.placement, retransmit=st.retransmit)
        agree = ab.agreement(rows, model, abs_s=tol["stop_abs_s"], rel=tol["stop_rel"],
                             observed_until_wall=(stop or {}).get("t_wall"))
        agree["block"] = block_agreement(model, blocks, tol)
        agree["ok"] = bool(agree["ok"] and agree["block"]["ok"])
    elif m is not None and m.name == "trw" and conns:
        t0 = min(float(c["due_mono"]) for c in conns)
        pred = falsepos.trw_block(falsepos.trw_attempts(conns), m.params, t0=t0)
        blk = block_agreement(pred, blocks, tol)
        pm, agree = dict(pred), {"ok": blk["ok"], "block": blk}
    period = float(m.params["release_period_s"]) if st.throttled and m is not None else None
    measured = ab.summary(rows, scheduled=(start or {}).get("connections"), blocks=blocks, period_s=period)
    measured |= {"benign_rate": t.rate, "stop_reason": (stop or {}).get("reason"),
                 "after_block": ab.after_block(rows, blocks[0]["t_wall"] if blocks else None)}
    if any(c.get("miss") for c in conns):
        measured["misses"] = sum(1 for c in conns if c.get("miss"))
    findings = []
    if blocks and m is not None and m.placement == "host" and measured["after_block"]["on_wire_after"]:
        findings.append({"finding": "block contradicted by the wire",
                         "detail": f"{measured['after_block']['on_wire_after']} benign connection(s) scheduled "
                                   "after the block reached the wire"})
    write_rows(csv_path, rows)
    if model is not None:
        pred = ab.distribution_of(model)
        pm = {"delay_p50_s": pred["p50"], "delay_p95_s": pred["p95"], "delay_p99_s": pred["p99"],
              "delay_max_s": pred["max"], "blocked_s": model["blocked_s"], "block_queue_len": model["block_queue_len"],
              "dropped": sum(1 for p in model["per_conn"].values() if p["fate"] == "dropped")}
    src = next((c.get("src") for c in conns if c.get("src")), None)
    fp_host = {"src": src, "t_block_s": blocks[0]["t_s"] if blocks else None,
               "cause": blocks[0]["cause"] if blocks else None,
               "model_block_s": (pm or {}).get("blocked_s"),
               "agree": None if agree is None else agree.get("ok")}
    return {"rows": rows, "model_per_conn": model["per_conn"] if model else None, "measured": measured,
            "model": pm, "agree": agree, "findings": findings, "blocks": blocks, "fp_host": fp_host}


def block_agreement(model: dict[str, Any], blocks: list[dict[str, Any]], tol: dict[str, float]) -> dict[str, Any]:
    """The model's block (time after the first scheduled connection) against the mechanism's own."""
    want, got = model["blocked_s"], blocks[0]["t_s"] if blocks else None
    if want is None or got is None:
        return {"ok": want is None and not blocks, "model_s": want, "measured_s": got}
    err = got - want
    return {"ok": abs(err) <= max(tol["stop_abs_s"], tol["stop_rel"] * want), "model_s": want, "measured_s": got,
            "error_s": err}


def write_rows(path: Path, rows: list[dict[str, Any]], keys: Sequence[str] = ROW_KEYS) -> None:
    """benign.csv: one row per connection, the columns `keys` (floats to the µs, booleans lower-case)."""
    def fmt(v):
        return "" if v is None else f"{v:.6f}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)
    lines = [",".join(keys)] + [",".join(fmt(r.get(k)) for k in keys) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
