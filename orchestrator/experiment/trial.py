"""One trial of an experiment, over SSH on a provisioned lab: capture, throttle, worm servers, the host's
normal traffic, the injector's trigger, the stop condition, collection, analysis, and the model beside it.

Every step goes through orchestrator.lab.programs (host agent services, our modules) and
orchestrator.experiment.capture, so the same code drives namespace hosts and VMs. `TrialRun` holds one trial's
state and runs its steps in order (reset, start, fill the working set, trigger, wait, stop and collect,
evaluate); each step is a method, so a mechanism or an experiment kind can change one without the others. The
record it returns (`TrialRecord`) is what trials.jsonl holds.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import CaptureError, ProcessDied, TestbedError
from orchestrator.experiment.capture import Capture
from orchestrator.experiment.commands import (
    custom_values,
    mark_argv,
    mechanism_argv,
    mechanism_stop_argv,
    server_argv,
    trigger_argv,
    worm_state_dir,
)
from orchestrator.experiment.evaluate import evaluate
from orchestrator.experiment.mechspec import fill
from orchestrator.experiment.record import TrialRecord, TrialSpec, TrialStatus
from orchestrator.experiment.setup import Setup, lab_ip
from orchestrator.experiment.watch import Death, Watch, Watched, logged_child, service, stop_verdict
from orchestrator.lab.fanout import parallel
from orchestrator.lab.programs import HostPlace, quote

AFTER_BLOCK_S = 0.3        # keep watching the wire this long after a block: nothing may leak
POLL_S = 0.2
READY_S = 10.0             # a mechanism has this long to log its config once started
EMULATED_SLOWDOWN = 6      # … times this on a guest under software emulation (TCG), on a loaded machine
CAPTURE = "capture"               # the capture's service name on the sniffer
BLOCKED = '"event":"blocked"'     # the throttle's event log, when it blocks
DISTURBED = "disturbed"           # a try ended early: the throttle released late beyond the tolerance
# the throttle's worst release lateness so far (t_mono − due_mono of its `released` lines, as
# agreement.decision_jitter reads them), read where it runs: POSIX awk, the log's fixed field names
LATE_AWK = ("""awk '/"event":"config"/ { m = 0 } /"event":"released"/ && /"due_mono":/ { t = $0; sub(/.*"t_mono":/, "", t); sub(/,.*/, "", t); """
            """d = $0; sub(/.*"due_mono":/, "", d); sub(/[,}].*/, "", d); if (t - d > m) m = t - d } """
            """END { printf "%.6f\\n", m + 0 }'""")
WORM_BOUNDS = ("max_attempts", "lifetime", "targets_exhausted")   # a scanner's own ends (not killed, signal, error)
FAIL_CLOSED_NOTE = " (it ran fail-closed: from then on its rules dropped new connections instead of passing them)"
FAIL_OPEN_NOTE = " (it ran fail-open, as the experiment asked: from then on new connections went out unthrottled)"

# the host's normal traffic, in the protocol under test (the paper's TCP and UDP throttles are separate):
# web connections, or DNS-like datagrams
_NORMAL = ("import socket,sys,time\nss=[]\nfor d in sys.argv[2:]:\n"
           " if sys.argv[1]=='tcp':\n  s=socket.socket(); s.setblocking(False); s.connect_ex((d, 80))\n"
           " else:\n  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.sendto(b'normal', (d, 53))\n"
           " ss.append(s)\ntime.sleep(0.1)\n")


def new_record(st: Setup, t: TrialSpec) -> TrialRecord:
    m = st.contained_by
    return TrialRecord(t.id, t.index, t.protocol, t.rate, t.repeat, st.exp.spec.state, st.normal,
                       m.placement if m else None, m.fail_open if m and m.daemon else None, time.time(),
                       st.mech.name if st.mech else None)


def service_name(st: Setup) -> str:
    """The mechanism's service name on its place: `throttle` for the reference throttle (as always), else its own."""
    assert st.mech is not None
    return "throttle" if st.throttled else st.mech.name


def event_log_path(st: Setup, t: TrialSpec, run_dir: str) -> str | None:
    """Where the trial's mechanism writes its event log on its place (None: it writes none)."""
    m, place = st.contained_by, st.throttle
    if m is None or place is None or not m.event_log:
        return None
    if m.custom is not None:
        assert m.custom.events is not None
        return fill(m.custom.events, custom_values(st, t, run_dir))
    return f"{place.prefix}/log/{service_name(st)}-{t.id}.jsonl"


def run_trial(st: Setup, t: TrialSpec) -> TrialRecord:
    """Run one trial; never raises for a trial that fails — its record says why. Every process the trial
    depends on is watched from its start to the end (orchestrator.experiment.watch): one that dies makes the
    trial an error naming it, never a result."""
    return TrialRun(st, t).run()



def guarded(rec: TrialRecord, steps: Callable[[], None], watch: Watch,
            clean_up: Callable[[], None]) -> TrialRecord:
    """Run a trial's steps (any kind's): a failure becomes the record's error — a trial that fails must not end
    the sweep — and leaves nothing running behind it; the services watched and the duration are recorded."""
    try:
        steps()
    except ProcessDied as exc:
        rec.status, rec.reason = "error", exc.message
        rec.died = [d.to_dict() for d in exc.deaths]
    except TestbedError as exc:
        rec.status, rec.reason = "error", exc.message
    except Exception as exc:    # a trial that fails must not end the sweep
        rec.status, rec.reason = "error", f"{type(exc).__name__}: {exc}"
    finally:
        rec.watched = [w.label for w in watch.items]
        if rec.status == "error":
            clean_up()
        rec.duration_s = round(time.time() - rec.started, 3)
    return rec

class TrialRun:
    """One trial's state while it runs, and its steps."""

    def __init__(self, st: Setup, t: TrialSpec):
        self.st, self.t = st, t
        h = self.h = st.hosts
        self.rec = new_record(st, t)
        self.tdir = st.run.trial_dir(t.id)
        self._mark = time.monotonic()
        self.cap = Capture(h, segment=st.segment, name=CAPTURE, end_avoid=(st.infected,))
        self.state_dirs = {srv: worm_state_dir(st, srv, t) for srv in st.servers}
        # the mechanism's: a directory of this trial ({run} of a custom one), its event log and its stderr
        self.mdir = f"{st.throttle.prefix}/run/mechanisms/{t.id}" if st.throttle else None
        self.tlog = event_log_path(st, t, self.mdir) if self.mdir else None
        self.terr = f"{st.throttle.prefix}/log/{service_name(st)}-{t.id}.log" if st.throttle else None
        self.inj_if = next(i.ifname for i in st.lab.host(st.injector).interfaces
                           if i.segment.startswith("experimental"))
        places: dict[str, Any] = {n: HostPlace(h, n) for n in dict.fromkeys([*st.servers, st.sniffer])}
        if st.throttle:
            places[st.throttle.label] = st.throttle
        self.watch = Watch(places)
        self.capture = service(st.sniffer, h.prefix(st.sniffer), self.cap.name, "tcpdump (the capture)",
                               log=self.cap.log)
        self.scanner: Watched | None = None
        self.stopped = False
        self.ended: float | None = None

    def quiet_watch(self) -> tuple[str, float] | None:
        """A mechanism with no block event (rate-limit, none, a user's without an event log) ends its trial on
        quiet_s of wire silence, watched live from the capture's file (files of `throttle:`/`kind:` experiments
        end as they always did)."""
        if self.tlog or self.st.exp.legacy:
            return None
        return self.cap.file, self.st.exp.spec.quiet_s

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.rec.phases[name] = round(now - self._mark, 3)
        self._mark = now

    def run(self) -> TrialRecord:
        return guarded(self.rec, self.steps, self.watch, self.clean_up)

    def steps(self) -> None:
        self.reset()
        self.start()
        self.fill_working_set()
        self.trigger()
        died = self.wait()
        if self.rec.status == "interrupted":       # not a result: stop what runs, and let --resume redo it
            stop_all(self.watch)
            self.cap.stop(check=False)
            return
        files = self.stop_and_collect(died)
        self.rec.evaluation = self.evaluate(files)
        self.phase("analyse")

    def evaluate(self, files: dict[str, Path | None]):
        """The trial's figures from its files (an experiment kind with figures of its own overrides this)."""
        return evaluate(self.st, self.t, files, self.tdir, end_wall=self.ended)

    # -- the steps, in order

    def reset(self) -> None:
        """Leftovers of an interrupted trial, the injector back on the experimental LAN. A trial's files from
        an earlier run on the same lab must not be read as this trial's (the throttle appends to its log: an
        old "blocked" line would end this trial at once)."""
        st, h = self.st, self.h
        def wipe(srv: str) -> Callable[[], Any]:
            return lambda: h.sh(srv, f"rm -rf {self.state_dirs[srv]}", timeout=15).check()
        stale = [wipe(srv) for srv in st.servers]
        if (place := st.throttle) is not None:
            old = " ".join(shlex.quote(p) for p in (self.mdir, self.tlog, self.terr) if p)
            stale.append(lambda: place.sh(f"rm -rf {old}", timeout=15).check())
        reset(st, extra=[lambda: h.sh(st.injector, f"ip link set {self.inj_if} up", timeout=15).check(), *stale])
        self.phase("reset")

    def start(self) -> None:
        """Capture, throttle and worm servers (in parallel: they are independent), each watched from its start."""
        st = self.st
        self.watch.add(self.capture)
        parallel([lambda srv=srv: self.start_server(srv) for srv in st.servers]
                 + [self.start_mechanism, lambda: self.cap.start(st.canary[0], st.canary[1])])
        self.phase("start")

    def start_server(self, srv: str) -> None:
        log = f"{self.state_dirs[srv]}/server.log"       # this trial's (the state directory is)
        self.h.start(srv, "worm-server", server_argv(self.st, srv, self.t), log=log)
        self.watch.add(service(srv, self.h.prefix(srv), "worm-server", "the worm server", log=log))

    def start_mechanism(self) -> None:
        """The trial's mechanism, through its registry descriptor (or a user's start command): a daemon runs as
        a watched service until it has logged its config; rules without a daemon are applied once."""
        st, place, m, mdir = self.st, self.st.throttle, self.st.contained_by, self.mdir
        if place is None or m is None or mdir is None:
            return
        name = service_name(st)
        if m.custom is not None:
            cmd = fill(m.custom.start, custom_values(st, self.t, mdir))
            r = place.sh(f"mkdir -p {shlex.quote(mdir)} && {cmd}", timeout=READY_S * 3)
            if not r.ok:
                raise TestbedError(f"{m.name}'s start command on {place.label} failed (exit {r.exit_code}): "
                                   f"{(r.stderr or r.stdout).strip()[-300:]}")
            return
        argv = mechanism_argv(place, st, self.t, self.tlog)
        if not m.daemon:
            r = place.run(argv, timeout=READY_S * 3)
            if not r.ok:
                raise TestbedError(f"{m.name} could not be applied on {place.label} (exit {r.exit_code}): "
                                   f"{(r.stderr or r.stdout).strip()[-300:]}")
            return
        place.start(name, argv, log=self.terr)
        label = "the throttle daemon" if st.throttled else f"the {m.name} daemon"
        self.watch.add(service(place.label, place.prefix, name, label, log=self.terr,
                               note=FAIL_OPEN_NOTE if m.fail_open else FAIL_CLOSED_NOTE))
        if not self.tlog:
            return
        # ready once its rules are in: it logs its config then
        wait_ready(place, self.tlog, f"{'the throttle' if st.throttled else m.name} on {place.label}", st.emulated)

    def stop_mechanism(self, check: bool = True) -> None:
        """Rules without a daemon (and a user's mechanism) are removed after every trial, a failed one too."""
        st, place, m, mdir = self.st, self.st.throttle, self.st.contained_by, self.mdir
        if place is None or m is None or m.daemon or mdir is None:
            return
        if m.custom is not None:
            r = place.sh(fill(m.custom.stop, custom_values(st, self.t, mdir)), timeout=30)
        else:
            argv = mechanism_stop_argv(place, st, self.t)
            if argv is None:
                return
            r = place.run(argv, timeout=30)
        if check and not r.ok:
            raise TestbedError(f"{m.name}'s stop on {place.label} failed (exit {r.exit_code}): "
                               f"{(r.stderr or r.stdout).strip()[-300:]}")

    def fill_working_set(self) -> None:
        """The host's normal traffic fills its working set (state: full); then the throttle logs what it holds
        as the worm arrives (a `state` line), kept as the record's `state_met`."""
        if self.st.normal:
            self.h.access.run(self.st.infected, ["python3", "-c", _NORMAL, self.t.protocol, *self.st.normal],
                              timeout=15, check=True)
        if self.st.throttled and self.st.throttle:
            self.rec.extra["state_met"] = state_met(self.st.throttle,
                                                    lab_ip(self.st.lab, self.st.infected, self.st.segment))

    def trigger(self) -> None:
        """The injector triggers the worm on the infected host, then leaves the experiment (one round trip:
        trigger, and on success take the injector off the experimental LAN)."""
        st = self.st
        r = self.h.sh(st.injector, f"{quote(trigger_argv(st, self.t))} && ip link set {self.inj_if} down",
                      timeout=30)
        if not r.ok:
            raise TestbedError(f"the injector's trigger was refused: {(r.stderr or r.stdout).strip()[-300:]}")
        self.rec.triggered = time.time()
        # the scanner the trigger started, a child of the infected host's worm server, which logs its end
        worm_dir = self.state_dirs[st.infected]
        self.scanner = self.watch.add(logged_child(st.infected, "the worm's scanner",
                                                   events=f"{worm_dir}/server.jsonl", exit_event="scan_exit",
                                                   log=f"{shlex.quote(worm_dir)}/scan-*.stderr"))
        self.phase("trigger")

    def wait(self) -> list[Death]:
        """The stop condition: blocked, the worm's own bounds, or the trial timeout. Returns what died."""
        assert self.scanner is not None
        died: list[Death] = []
        try:
            self.rec.status, self.rec.reason = wait_stop(self.st, self.watch, self.scanner, self.tlog,
                                                         self.state_dirs[self.st.infected],
                                                         self.st.exp.spec.timeout_s, quiet=self.quiet_watch())
            if (self.rec.reason or "").startswith(DISTURBED):   # not a result: it is redone (disturb.py)
                self.rec.extra["disturbed_early"] = self.rec.reason
        except ProcessDied as exc:
            died = exc.deaths
        self.ended = time.time()
        self.phase("run")
        return died

    def stop_and_collect(self, died: list[Death]) -> dict[str, Path | None]:
        """Stop everything, the worm first; collect (after a death too: the files show what happened)."""
        rec = self.rec
        died += stop_all(self.watch, known=died)
        self.stop_mechanism()
        self.stopped = True
        stats = self.cap.stop(check=False)   # judged below, once the files are safe
        rec.capture = stats.to_dict()
        if self.capture not in (d.watched for d in died):
            died += [d for d in [stop_verdict(self.capture, self.cap.stop_report)] if d]
        try:
            files = collect(self.st, self.t, self.tdir, self.cap, self.tlog, self.state_dirs)
        except TestbedError as exc:
            if not died:
                raise
            files, rec.collect_error = {}, exc.message
        rec.files = {k: str(Path(v).relative_to(self.st.run.path)) for k, v in files.items() if v}
        self.phase("collect")
        if died:
            self.watch.tails(died)
            raise ProcessDied(died)
        if stats.problem():
            raise CaptureError(f"{stats.problem()}: the trial's wire figures cannot be trusted")
        return files

    def clean_up(self) -> None:
        """Leave nothing running behind a failed trial (the failure is already recorded; a failure here is
        said beside it)."""
        rec = self.rec
        try:
            if not self.stopped:
                stop_all(self.watch)
                self.stop_mechanism(check=False)
                if rec.capture is None and self.capture in self.watch.items:
                    self.cap.stop(check=False)
            if self.st.throttle and any(d.get("service") == service_name(self.st) for d in rec.died or []):
                clear_mechanism(self.st, self.t)
        except Exception as exc:
            rec.reason = f"{rec.reason}; cleaning up also failed: {exc}"


def state_met(place, src: str) -> dict[str, Any] | None:
    """Ask the throttle to log what it holds now (`python -m throttle mark`): the infected source's working set
    and its state (fresh, partial, full), as the worm will meet it. None (and the trial goes on) if it cannot."""
    r = place.sh(quote(mark_argv(place)), timeout=15)
    try:
        said = json.loads(r.stdout) if r.ok else None
    except ValueError:
        said = None
    if not isinstance(said, dict):
        return None
    got = (said.get("sources") or {}).get(src) or said.get("default") or {}
    return {"state": got.get("state"), "working_set": got.get("working_set"), "t_wall": said.get("t_wall")}


def reset(st: Setup, extra=()) -> None:
    """Stop whatever a previous (interrupted) trial left running."""
    h = st.hosts
    jobs = [(srv, "worm-server") for srv in st.servers] + [(st.sniffer, CAPTURE)]
    m, place = st.contained_by, st.throttle
    more = [lambda: place.stop(service_name(st), timeout=5)] if place is not None and m and m.daemon else []
    parallel([lambda j=j: h.stop(j[0], j[1], timeout=5) for j in jobs] + more + list(extra))


def wait_stop(st: Setup, watch: Watch, scanner: Watched, tlog: str | None, worm_dir: str,
              timeout: float, quiet: tuple[str, float] | None = None) -> tuple[TrialStatus, str | None]:
    """Poll until the throttle blocks, the worm's own bounds end it, or the timeout. Each poll is one round
    trip to each place the stop condition reads (the infected host, the throttle's), which also says how every
    process watched there stands, and now and then one to another place in turn (orchestrator.experiment.watch); one
    that died (or a scanner stopped by anything but its own bounds) raises ProcessDied. A last look at every
    place before returning leaves nothing between the last poll and the stop unseen. With `st.abort_late_s`
    (a try that would be redone if disturbed), the same round trip reads the throttle's worst release lateness
    so far, and a release later than that while the worm still scans ends the try at once, its reason
    starting with DISTURBED: it is redone then, not after its whole run (a 1/s trial takes 120 s)."""
    extra: dict[str, dict[str, str]] = {
        st.infected: {"scan": f"ls {worm_dir}/scan-*.jsonl 2>/dev/null | head -n 1 | xargs -r tail -n 1"}}
    place = st.throttle if tlog else None       # the throttle's log, read where it runs
    if tlog and place is not None:
        extra.setdefault(place.label, {})["blocked"] = (
            f"grep -q -F {shlex.quote(BLOCKED)} {shlex.quote(tlog)} && echo blocked")
        if getattr(st, "abort_late_s", None) is not None:
            extra[place.label]["late"] = f"{LATE_AWK} {shlex.quote(tlog)} 2>/dev/null"
    silence = _Silence(st.sniffer, *quiet) if quiet else None
    if silence:
        extra.setdefault(st.sniffer, {})["size"] = silence.script
    deadline = time.monotonic() + timeout

    def done(status: TrialStatus, reason: str) -> tuple[TrialStatus, str]:
        deaths, _ = watch.poll(everywhere=True)
        if deaths:
            raise ProcessDied(deaths)
        return status, reason

    while True:
        if st.stop.is_set():
            return "interrupted", "the run was interrupted"
        deaths, out = watch.poll(extra)
        if deaths:
            raise ProcessDied(deaths)
        if place is not None and out.get(place.label, {}).get("blocked") == "blocked":
            time.sleep(AFTER_BLOCK_S)
            return done("ok", "blocked")
        if silence and silence.quiet(out):
            return done("ok", f"the wire was quiet for {silence.quiet_s:g} s")
        if (why := _worm_end(out.get(st.infected, {}).get("scan", ""), scanner, watch)) is not None:
            return done("ok", f"worm stopped: {why}")
        if (late := _disturbed(out, place, getattr(st, "abort_late_s", None))) is not None:
            return done("ok", late)
        if time.monotonic() > deadline:
            return done("timeout", f"not blocked within {timeout:g} s" if tlog else f"still scanning after {timeout:g} s")
        time.sleep(POLL_S)


def _worm_end(last: str, scanner: Watched, watch: Watch) -> str | None:
    """The reason the worm's scanner stopped at its own bounds, from its log's last line (None: it scans);
    stopped for anything else, it died mid-trial (ProcessDied)."""
    if not last:
        return None
    try:
        ev = json.loads(last)
    except ValueError:
        return None
    if ev.get("event") != "stop":
        return None
    why = ev.get("reason")
    if why not in WORM_BOUNDS:
        d = Death(scanner, None, "mid-trial", how=f"stopped with reason '{why}'"
                  + (f" ({ev['error']})" if ev.get("error") else "") + ", not at its own bounds")
        watch.tails([d])
        raise ProcessDied([d])
    return str(why)


def _disturbed(out: dict[str, dict[str, str]], place, abort_late_s: float | None) -> str | None:
    """The reason to end a try at once: the throttle's worst release lateness so far (LATE_AWK, this poll's
    answer) beyond `abort_late_s`. None when it is not, or was not read."""
    if place is None or abort_late_s is None:
        return None
    try:
        late = float(out.get(place.label, {}).get("late", "").strip())
    except ValueError:
        return None
    if late <= abort_late_s:
        return None
    return (f"{DISTURBED}: the throttle released {late * 1000:.1f} ms late while the worm scanned "
            f"(tolerance {abort_late_s * 1000:.0f} ms); ended at once, to be redone")


class _Silence:
    """The wire's silence, watched live: the capture's file grows with every packet on it (tcpdump -U)."""

    def __init__(self, sniffer: str, pcap: str, quiet_s: float):
        self.sniffer, self.quiet_s = sniffer, quiet_s
        self.script = f"stat -c %s {shlex.quote(pcap)} 2>/dev/null"
        self.size: str | None = None
        self.grew = time.monotonic()

    def quiet(self, out: dict[str, dict[str, str]]) -> bool:
        """Has the file stayed the same size for quiet_s (from this poll's answers)?"""
        if self.sniffer not in out:
            return False
        size = out[self.sniffer].get("size", "").strip()
        if size != self.size:
            self.size, self.grew = size, time.monotonic()
            return False
        return time.monotonic() - self.grew >= self.quiet_s


def wait_ready(place: Any, log: str, what: str, emulated: bool, *, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> None:
    """Until `log` on `place` holds the daemon's config event (READY_S, × EMULATED_SLOWDOWN on an emulated
    guest, which is also asked less often: each look costs its one vCPU); TestbedError naming `what` and the
    wait if not."""
    ready_s = READY_S * (EMULATED_SLOWDOWN if emulated else 1)
    deadline = clock() + ready_s
    while not place.contains(log, '"event":"config"'):
        if clock() > deadline:
            raise TestbedError(f"{what} did not come up within {ready_s:g} s" + (" (an emulated guest)"
                                                                                   if emulated else ""))
        sleep(0.5 if emulated else 0.05)


def stop_all(watch: Watch, known: Sequence[Death] = ()) -> list[Death]:
    """Stop every watched service but the capture: the worm first (every server at once: a server stops its
    scanner), then the rest (the mechanism). Returns what had died, did not stop cleanly or exited non-zero,
    besides the `known` deaths."""
    seen = {id(d.watched) for d in known}
    todo = [w for w in watch.services() if w.service != CAPTURE]
    out: list[Death] = []
    for stage in ([w for w in todo if w.service == "worm-server"], [w for w in todo if w.service != "worm-server"]):
        reps = parallel([lambda w=w: watch.places[w.place].stop(w.service, timeout=10) for w in stage])
        out += [d for w, rep in zip(stage, reps, strict=True) if id(w) not in seen
                for d in [stop_verdict(w, rep)] if d]
    return out


def clear_mechanism(st: Setup, t: TrialSpec) -> None:
    """Remove the rules a dead mechanism's daemon left behind (fail-closed, they would drop the host's new
    connections until the next trial's daemon replaced them): its descriptor's stop command."""
    place = st.throttle
    if place is None:
        return
    argv = mechanism_stop_argv(place, st, t)
    if argv is None:
        return
    r = place.run(argv, timeout=30)
    if not r.ok:
        raise TestbedError(f"the dead {service_name(st)}'s rules on {place.label} could not be removed: "
                           f"{(r.stderr or r.stdout).strip()[-300:]}")


def collect(st: Setup, t: TrialSpec, tdir: Path, cap: Capture, tlog: str | None,
            state_dirs: dict[str, str]) -> dict[str, Path | None]:
    h = st.hosts
    files: dict[str, Path | None] = {}

    def pcap() -> None:
        files["pcap"] = cap.fetch(tdir / "capture.pcap")

    def worm_logs(srv: str) -> None:
        listing = h.sh(srv, f"ls {state_dirs[srv]} 2>/dev/null").stdout.split()
        for name in (n for n in listing if n.endswith(".jsonl")):
            key = "worm_log" if (srv == st.infected and name.startswith("scan-")) else f"{srv}:{name}"
            dest = tdir / (f"worm-{srv}-{name}" if key != "worm_log" else "worm.jsonl")
            h.access.get(srv, f"{state_dirs[srv]}/{name}", dest)
            files[key] = dest
    jobs = [pcap, *(lambda srv=srv: worm_logs(srv) for srv in st.servers)]
    if tlog and st.throttle is not None:
        place, log = st.throttle, tlog

        def throttle_log() -> None:   # the reference throttle's under its old name; another mechanism's beside
            key, name = ("throttle_log", "throttle.jsonl") if st.throttled else ("mechanism_log", "mechanism.jsonl")
            files[key] = dest = tdir / name
            place.fetch(log, dest)
        jobs.insert(1, throttle_log)
    parallel(jobs)
    return files
