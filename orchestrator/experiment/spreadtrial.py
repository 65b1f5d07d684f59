"""One spread trial on a provisioned lab: a capture on every experimental segment the vulnerable hosts stand
on, a worm server on each vulnerable host (the generation bound raised to the lab's), the mechanism on this
trial's carriers (or the gateway), the injector's trigger of the initial host, then the spread watched until
every host is infected, the wire falls quiet, or the timeout; collection and the figures beside the model.

Every process is watched as in a stopping-speed trial (orchestrator.experiment.watch): one that dies makes
the trial an error; a capture that lost packets does too (its figures could not be trusted).
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from orchestrator.analysis import infections as inf
from orchestrator.errors import CaptureError, ProcessDied, TestbedError
from orchestrator.experiment.capture import Capture
from orchestrator.experiment.commands import mechanism_argv, server_argv, trigger_argv, worm_state_dir
from orchestrator.experiment.mechspec import MechanismRun
from orchestrator.experiment.record import Evaluation, TrialRecord, TrialSpec
from orchestrator.experiment.spread import GATEWAY
from orchestrator.experiment.spreadrun import SpreadSetup, agreement, prediction
from orchestrator.experiment.trial import guarded, stop_all, wait_ready
from orchestrator.experiment.watch import Death, Watch, logged_child, service, stop_verdict
from orchestrator.lab.fanout import MAX_FANOUT, parallel
from orchestrator.lab.programs import HostPlace, quote

POLL_S = 0.5
PENDING_PER_POLL = MAX_FANOUT     # hosts not yet infected asked per poll (in turn, in a larger lab)
# Under software emulation (TCG) every poll is an SSH command that costs each guest's one vCPU a good share of a
# second: polled as on namespaces, four VM blades took 4.5-15 s to start a scanner and a daemon missed its
# minute. On emulated guests the orchestrator polls this many times less often (it decides only when to stop,
# and when a daemon is ready; every figure comes from the logs and the capture).
EMULATED_POLL = 4
SERVICE = "throttle"


def poll_s(emulated: bool, base: float = POLL_S) -> float:
    return base * (EMULATED_POLL if emulated else 1)


def with_generations(argv: list[str], bound: int) -> list[str]:
    """A server's or trigger's command line with its generation bound raised to `bound`."""
    out = list(argv)
    out[out.index("--max-generations") + 1] = str(bound)
    return out


def asking(hosts: Sequence[str], per_poll: int) -> Callable[[set[str]], list[str]]:
    """Which of the hosts still pending to ask this poll: all, up to `per_poll`; else `per_poll` of them in
    turn, in the hosts' order, so every pending host is asked within ceil(pending / per_poll) polls."""
    order = list(hosts)
    cursor = 0             # where in `order` the next turn starts

    def ask(pending: set[str]) -> list[str]:
        nonlocal cursor
        todo = [i for i in range(len(order)) if order[i] in pending]
        if len(todo) <= per_poll:
            return [order[i] for i in todo]
        turn = ([i for i in todo if i >= cursor] + [i for i in todo if i < cursor])[:per_poll]
        cursor = turn[-1] + 1
        return [order[i] for i in turn]
    return ask


def run_spread_trial(ss: SpreadSetup, t: TrialSpec) -> TrialRecord:
    """Run one spread trial; never raises for a trial that fails — its record says why."""
    return SpreadTrial(ss, t).run()


class SpreadTrial:
    def __init__(self, ss: SpreadSetup, t: TrialSpec):
        self.ss, self.t = ss, t
        st = self.st = ss.base
        self.h = st.hosts
        self.mech = ss.mechanism(t)
        self.carriers = ss.carriers(t)
        m = self.mech
        placement = GATEWAY if t.deploy == GATEWAY else (m.placement if m else None)
        self.rec = TrialRecord(t.id, t.index, "tcp", t.rate, t.repeat, "fresh", [], placement if m else None,
                               m.fail_open if m and m.daemon else None, time.time(), t.mechanism)
        self.rec.extra = {"deploy": t.deploy, "hosts": len(ss.vulnerable), "carriers": self.carriers}
        self.tdir = st.run.trial_dir(t.id)
        self.dirs = {h: worm_state_dir(st, h, t) for h in ss.vulnerable}
        self.caps = {seg: Capture(self.h, segment=seg, name=f"capture-{i}") for i, seg in enumerate(ss.segments)}
        self.places: dict[str, HostPlace] = {}        # carrier (or the gateway) → its place
        if m is not None and t.deploy == GATEWAY and st.gateway:
            self.places[st.gateway] = HostPlace(self.h, st.gateway)
        elif m is not None:
            self.places = {c: HostPlace(self.h, c) for c in self.carriers}
        hosts = dict.fromkeys([*ss.vulnerable, st.sniffer, *self.places])
        self.watch = Watch({n: HostPlace(self.h, n) for n in hosts})
        self.stopped = False
        self._mark = time.monotonic()

    def tlog(self, host: str) -> str:
        return f"{self.h.prefix(host)}/log/{SERVICE}-{self.t.id}.jsonl"

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.rec.phases[name] = round(now - self._mark, 3)
        self._mark = now

    def run(self) -> TrialRecord:
        return guarded(self.rec, self.steps, self.watch, self.clean_up)

    def steps(self) -> None:
        self.reset()
        self.start()
        self.trigger()
        died = self.wait()
        if self.rec.status == "interrupted":
            self.clean_up()
            return
        files = self.stop_and_collect(died)
        self.rec.evaluation = self.evaluate(files)
        self.phase("analyse")

    # -- the steps

    def reset(self) -> None:
        """Leftovers of an interrupted trial stopped, this trial's files wiped, the injector back on the LAN."""
        st, h = self.st, self.h

        def wipe(host: str, service_name: str, path: str) -> None:
            h.stop(host, service_name, timeout=5)
            h.sh(host, f"rm -rf {shlex.quote(path)}", timeout=15).check()
        jobs: list[Callable[[], Any]] = [partial(wipe, v, "worm-server", self.dirs[v]) for v in self.ss.vulnerable]
        jobs += [partial(wipe, p, SERVICE, self.tlog(p)) for p in self.places]
        jobs += [partial(h.stop, st.sniffer, c.name, timeout=5) for c in self.caps.values()]
        jobs.append(partial(h.sh, st.injector, f"ip link set {self._injector_if()} up", timeout=15))
        parallel(jobs)
        self.phase("reset")

    def _injector_if(self) -> str:
        return next(i.ifname for i in self.st.lab.host(self.st.injector).interfaces
                    if i.segment.startswith("experimental"))

    def start(self) -> None:
        """Captures, the mechanism on its places and every worm server, each watched from its start."""
        st = self.st
        for c in self.caps.values():
            self.watch.add(service(st.sniffer, self.h.prefix(st.sniffer), c.name, f"tcpdump ({c.name})", log=c.log))
        jobs: list[Any] = [lambda v=v: self.start_server(v) for v in self.ss.vulnerable]
        jobs += [lambda p=p: self.start_mechanism(p) for p in self.places]
        jobs += [lambda seg=seg, c=c: c.start(*self.ss.segments[seg]) for seg, c in self.caps.items()]
        parallel(jobs)
        self.phase("start")

    def start_server(self, v: str) -> None:
        log = f"{self.dirs[v]}/server.log"
        self.h.start(v, "worm-server", with_generations(server_argv(self.st, v, self.t), self.ss.bound), log=log)
        self.watch.add(service(v, self.h.prefix(v), "worm-server", "the worm server", log=log))

    def start_mechanism(self, host: str) -> None:
        m, place = self.mech, self.places[host]
        assert m is not None and m.descriptor is not None
        if not m.daemon or m.custom is not None:
            raise TestbedError(f"a spread deploys daemon mechanisms from the registry; {m.name} is not one")
        gateway = host == self.st.gateway and self.t.deploy == GATEWAY
        iface = "" if gateway else next(i.ifname for i in self.st.lab.host(host).interfaces
                                        if i.segment.startswith("experimental"))
        run_m: MechanismRun = dataclasses.replace(m, placement=GATEWAY) if gateway else m
        st = dataclasses.replace(self.st, mech=run_m, throttle=place, throttle_iface=iface, normal=[])
        log, err = self.tlog(host), f"{self.h.prefix(host)}/log/{SERVICE}-{self.t.id}.log"
        place.start(SERVICE, mechanism_argv(place, st, self.t, log if m.event_log else None), log=err)
        self.watch.add(service(host, place.prefix, SERVICE, f"the {m.name} daemon", log=err))
        if not m.event_log:
            return
        try:
            wait_ready(place, log, f"{m.name} on {host}", self.st.emulated)
        except TestbedError as exc:     # say what the daemon said, if anything
            said = place.sh(f"tail -c 600 {shlex.quote(err)} 2>/dev/null", timeout=30).stdout.strip()
            raise TestbedError(f"{exc}; its log: {said or '(empty)'}") from None

    def trigger(self) -> None:
        st = self.st
        argv = with_generations(trigger_argv(st, self.t), self.ss.bound)
        r = self.h.sh(st.injector, f"{quote(argv)} && ip link set {self._injector_if()} down", timeout=30)
        if not r.ok:
            raise TestbedError(f"the injector's trigger was refused: {(r.stderr or r.stdout).strip()[-300:]}")
        self.rec.triggered = time.time()
        self.phase("trigger")

    def _scanner(self, v: str):
        d = self.dirs[v]
        return logged_child(v, "the worm's scanner", events=f"{d}/server.jsonl", exit_event="scan_exit",
                            log=f"{shlex.quote(d)}/scan-*.stderr")

    def wait(self) -> list[Death]:
        """Until every vulnerable host is infected, the wire (every capture) is quiet for quiet_s, or the timeout.
        Each poll asks hosts not yet infected whether its server took a trigger: every one of them in a lab of up
        to PENDING_PER_POLL, else that many in turn (`asking`) — an infection's time is its server's own log,
        so asking later changes no figure, only when its scanner is first watched."""
        s, sniffer = self.st.exp.spec, self.st.sniffer
        pending = set(self.ss.vulnerable)
        ask = asking(self.ss.vulnerable, PENDING_PER_POLL)
        sizes = {f"size{i}": f"stat -c %s {shlex.quote(c.file)} 2>/dev/null" for i, c in enumerate(self.caps.values())}
        last, grew = "", time.monotonic()
        deadline = time.monotonic() + s.timeout_s
        try:
            while True:
                if self.st.stop.is_set():
                    self.rec.status, self.rec.reason = "interrupted", "the run was interrupted"
                    return []
                extra = {v: {"inf": f"ls {self.dirs[v]}/scan-*.jsonl 2>/dev/null | head -n 1"} for v in ask(pending)}
                extra[sniffer] = {**extra.get(sniffer, {}), **sizes}
                deaths, out = self.watch.poll(extra)
                if deaths:
                    raise ProcessDied(deaths)
                for v in [v for v in pending if out.get(v, {}).get("inf")]:
                    pending.discard(v)
                    self.watch.add(self._scanner(v))
                now_sizes = "|".join(out.get(sniffer, {}).get(k, "") for k in sizes)
                if now_sizes != last:
                    last, grew = now_sizes, time.monotonic()
                if not pending:
                    self.rec.status, self.rec.reason = "ok", "every vulnerable host was infected"
                elif time.monotonic() - grew >= s.quiet_s:
                    self.rec.status, self.rec.reason = "ok", f"the wire was quiet for {s.quiet_s:g} s"
                elif time.monotonic() > deadline:
                    self.rec.status, self.rec.reason = "timeout", f"still spreading after {s.timeout_s:g} s"
                if self.rec.reason:
                    deaths, _ = self.watch.poll(everywhere=True)
                    if deaths:
                        raise ProcessDied(deaths)
                    return []
                time.sleep(poll_s(self.st.emulated))
        except ProcessDied as exc:
            return exc.deaths
        finally:
            self.phase("run")

    def _stop_all(self, known: Sequence[Death] = ()) -> list[Death]:
        """The worm servers, then the mechanisms (trial.stop_all); the captures are stopped by Capture.stop."""
        view = Watch(self.watch.places)
        view.items = [w for w in self.watch.items if not (w.service or "").startswith("capture")]
        return stop_all(view, known=known)

    def stop_and_collect(self, died: list[Death]) -> dict[str, Path]:
        rec = self.rec
        died += self._stop_all(died)
        self.stopped = True
        stats = parallel([lambda c=c: c.stop(check=False) for c in self.caps.values()])
        rec.capture = {c.segment: s.to_dict() for c, s in zip(self.caps.values(), stats, strict=True)}
        for c in self.caps.values():
            w = next(w for w in self.watch.items if w.service == c.name)
            if w not in (d.watched for d in died) and (d := stop_verdict(w, c.stop_report)):
                died.append(d)
        files = self.collect()
        rec.files = {k: str(Path(v).relative_to(self.st.run.path)) for k, v in files.items()}
        self.phase("collect")
        if died:
            self.watch.tails(died)
            raise ProcessDied(died)
        problems = [p for s in stats if (p := s.problem())]
        if problems:
            raise CaptureError("; ".join(problems) + ": the trial's wire figures cannot be trusted")
        return files

    def collect(self) -> dict[str, Path]:
        h, files = self.h, {}

        def server_log(v: str) -> None:
            dest = self.tdir / "servers" / f"{v}.jsonl"
            dest.parent.mkdir(parents=True, exist_ok=True)
            h.access.get(v, f"{self.dirs[v]}/server.jsonl", dest)
            files[f"{v}:server"] = dest

        def mech_log(p: str) -> None:
            dest = self.tdir / "mechanism" / f"{p}.jsonl"
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.places[p].fetch(self.tlog(p), dest)
            files[f"{p}:mechanism"] = dest

        def pcap(i: int, c: Capture) -> None:
            files[f"pcap:{c.segment}"] = c.fetch(self.tdir / f"capture-{i}.pcap")
        jobs: list[Callable[[], Any]] = [partial(server_log, v) for v in self.ss.vulnerable]
        jobs += [partial(mech_log, p) for p in self.places if self.mech and self.mech.event_log]
        jobs += [partial(pcap, i, c) for i, c in enumerate(self.caps.values())]
        parallel(jobs)
        return files

    def evaluate(self, files: dict[str, Path]) -> Evaluation:
        from orchestrator.experiment.spreadeval import evaluate_spread

        measured, findings, infections = evaluate_spread(self.ss, self.t, files, self.places)
        inf.write_csv(infections, self.tdir / "infections.csv")
        self.rec.files = (self.rec.files or {}) | {"infections": str((self.tdir / "infections.csv")
                                                                     .relative_to(self.st.run.path))}
        pred = prediction(self.ss, self.t)
        model = None if pred is None else {k: pred.figures[k] for k in (*inf.FIGURE_KEYS, "infected_final")}
        return Evaluation(measured, findings, model, agreement(pred, measured))

    def clean_up(self) -> None:
        try:
            if not self.stopped:
                self._stop_all()
                parallel([lambda c=c: c.stop(check=False) for c in self.caps.values()])
        except Exception as exc:
            self.rec.reason = f"{self.rec.reason}; cleaning up also failed: {exc}"
