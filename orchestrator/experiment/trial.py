"""One trial of an experiment, over SSH on a provisioned lab: capture, throttle, worm servers, the host's
normal traffic, the injector's trigger, the stop condition, collection, analysis, and the model beside it.

Every step goes through orchestrator.lab.programs (host agent services, our modules) and orchestrator.experiment.capture, so
the same code drives namespace hosts and VMs. The record it returns is what trials.jsonl holds.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.analysis.attempts import extract_attempts
from orchestrator.analysis.metrics import MetricsSettings
from orchestrator.analysis.pcap import read_capture
from orchestrator.analysis.trial import analyse_trial
from orchestrator.atomic import atomic_write_json
from orchestrator.errors import CaptureError, ProcessDied, TestbedError
from orchestrator.experiment import agreement
from orchestrator.experiment.capture import Capture
from orchestrator.experiment.rundir import RunDir, finite
from orchestrator.experiment.spec import Experiment
from orchestrator.experiment.watch import Death, Watch, Watched, logged_child, parallel, service, stop_verdict
from orchestrator.lab.programs import HostPlace, LabHosts, LocalPlace, quote
from orchestrator.labfile.topology import Lab

AFTER_BLOCK_S = 0.3        # keep watching the wire this long after a block: nothing may leak
POLL_S = 0.2
READY_S = 10.0             # a mechanism has this long to log its config once started
EMULATED_SLOWDOWN = 6      # … times this on a guest under software emulation (TCG), on a loaded machine
CAPTURE = "capture"               # the capture's service name on the sniffer
BLOCKED = '"event":"blocked"'     # the throttle's event log, when it blocks
WORM_BOUNDS = ("max_attempts", "lifetime", "targets_exhausted")   # a scanner's own ends (not killed, signal, error)
FAIL_CLOSED_NOTE = " (it ran fail-closed: from then on its rules dropped new connections instead of passing them)"
FAIL_OPEN_NOTE = " (it ran fail-open, as the experiment asked: from then on new connections went out unthrottled)"


@dataclass(frozen=True)
class TrialSpec:
    index: int
    protocol: str
    rate: float
    repeat: int

    @property
    def id(self) -> str:
        return f"{self.protocol}-r{self.rate:g}-{self.repeat}".replace(".", "_")


@dataclass
class Setup:
    """What every trial of a run shares (resolved once, after the lab is up and provisioned)."""

    exp: Experiment
    lab: Lab
    hosts: LabHosts
    run: RunDir
    infected: str
    injector: str
    sniffer: str
    gateway: str | None
    servers: list[str]
    segment: str
    exp_ranges: list[str]
    normal: list[str]
    canary: tuple[str, str]
    throttle: HostPlace | LocalPlace | None = None     # where the throttle runs
    throttle_iface: str | None = None
    retransmit: str = "linux"         # the infected host's SYN retransmission schedule (for the model)
    retransmit_why: str = ""
    shared_clock: bool = False        # capture, worm and throttle on one kernel's clock (the netns provider)
    emulated: bool = False            # guests under QEMU's software emulation: wider tolerances
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def tolerance(self) -> dict:
        return agreement.tolerance(self.emulated)

    @classmethod
    def resolve(cls, exp: Experiment, lab: Lab, hosts: LabHosts, run: RunDir) -> Setup:
        s = exp.spec
        infected = lab.host(s.infected or lab.by_role("blade")[0].name)
        iface = next(i for i in infected.interfaces if i.segment.startswith("experimental"))
        injector = lab.by_role("injector")[0]
        gateway = lab.by_role("gateway")[0] if lab.by_role("gateway") else None
        servers = [infected.name] + [h.name for h in lab.by_role("target")]
        # the canary crosses the infected host's segment between two hosts that are not the worm
        if injector.ip(iface.segment) and gateway and gateway.ip(iface.segment):
            canary = (injector.name, gateway.ip(iface.segment))
        elif gateway and gateway.ip(iface.segment):
            canary = (gateway.name, infected.ip(iface.segment))
        else:
            canary = (injector.name, infected.ip(iface.segment))
        setup = cls(exp, lab, hosts, run, infected.name, injector.name, lab.by_role("sniffer")[0].name,
                    gateway.name if gateway else None, servers, iface.segment,
                    [seg.subnet for seg in lab.experimental_segments()],
                    normal_destinations(lab, infected.name, s.worm.scan, s.throttle.working_set_size
                                        if s.throttle != "none" else 5) if s.state == "full" else [],
                    canary)
        setup.retransmit, setup.retransmit_why = agreement.sender_schedule(hosts.sh(
            infected.name, "cat /proc/sys/net/ipv4/tcp_syn_linear_timeouts 2>/dev/null", timeout=30).stdout)
        if exp.throttled:
            if s.throttle.placement == "host":
                setup.throttle, setup.throttle_iface = HostPlace(hosts, infected.name), iface.ifname
            elif s.throttle.placement == "gateway":
                assert gateway is not None
                setup.throttle = HostPlace(hosts, gateway.name)
                setup.throttle_iface = next(i.ifname for i in gateway.interfaces if i.segment == iface.segment)
            else:   # wire: outside the unmodified host, where its frames enter the lab's switch
                acc = hosts.access
                argv, port = acc.provider.wire_point(lab.name, infected.name)
                setup.throttle = LocalPlace(argv, acc.store.lab_dir(lab.name) / "wire", f"the wire of {infected.name}")
                setup.throttle_iface = port
        return setup


def normal_destinations(lab: Lab, host: str, scan: str, n: int) -> list[str]:
    """The host's normal traffic before the worm: n destinations outside the scan range, so its working set is
    full when the worm starts. Taken from the top of the experimental subnets the host reaches through the
    gateway, so the traffic crosses its wire and any throttle outside the host sees it too (a SYN to an
    empty address on the host's own subnet never leaves the host: ARP fails); the host's own subnet is the
    last resort, and then only a throttle in the host sees it."""
    h = lab.host(host)
    seg = next(i for i in h.interfaces if i.segment.startswith("experimental"))
    own = lab.segment(seg.segment)
    routed = [s for s in lab.experimental_segments() if s.key != own.key] if h.default_via else []
    taken = {i.ip for x in lab.hosts for i in x.interfaces if i.ip}
    scan_net = ipaddress.ip_network(scan)
    out: list[str] = []
    for s in [*routed, own]:
        for a in reversed(list(ipaddress.ip_network(s.subnet).hosts())):
            if a in scan_net or str(a) in taken:
                continue
            out.append(str(a))
            if len(out) == n:
                return out
    raise TestbedError(f"{host} can reach no room outside the scan range {scan} for its normal traffic")


# the host's normal traffic, in the protocol under test (the paper's TCP and UDP throttles are separate):
# web connections, or DNS-like datagrams
_NORMAL = ("import socket,sys,time\nss=[]\nfor d in sys.argv[2:]:\n"
           " if sys.argv[1]=='tcp':\n  s=socket.socket(); s.setblocking(False); s.connect_ex((d, 80))\n"
           " else:\n  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.sendto(b'normal', (d, 53))\n"
           " ss.append(s)\ntime.sleep(0.1)\n")


def _ip(lab: Lab, host: str, segment: str) -> str:
    ip = lab.host(host).ip(segment) or next(i.ip for i in lab.host(host).interfaces
                                            if i.segment.startswith("experimental") and i.ip)
    assert ip
    return ip


def _delivered_to_gateway(lab: Lab) -> set[str]:
    """Addresses a scan can hit that the gateway delivers to itself instead of forwarding — its own, and its
    subnets' broadcast addresses —, so a throttle on its forwarded traffic never sees them (measured: the
    worm's SYN to the gateway's address on the targets' subnet was answered, not queued)."""
    out: set[str] = set()
    for gw in lab.by_role("gateway"):
        for i in gw.interfaces:
            if i.address:
                out |= {i.ip, str(ipaddress.ip_interface(i.address).network.broadcast_address)}
    return out


def _unseen(st: Setup) -> set[str]:
    th = st.exp.spec.throttle
    return _delivered_to_gateway(st.lab) if st.exp.throttled and th.placement == "gateway" else set()


def answers_measurable(st: Setup, t: TrialSpec) -> bool:
    """Can the attempts out be counted from the answers, with the capture in front of the throttle? For TCP,
    when the gateway answers every scan of an empty address (reset); the capture's clock must then be tied to
    the throttle's (one kernel on namespaces; measured from the packets it passed on VMs)."""
    return bool(st.exp.throttled and st.exp.spec.throttle.placement in ("gateway", "wire")
                and t.protocol == "tcp" and st.exp.spec.gateway_empty == "reset")


def run_trial(st: Setup, t: TrialSpec) -> dict[str, Any]:
    """Run one trial; never raises for a trial that fails — its record says why. Every process the trial
    depends on is watched from its start to the end (orchestrator.experiment.watch): one that dies makes the trial an
    error naming it, never a result."""
    s = st.exp.spec
    h = st.hosts
    rec: dict[str, Any] = {"trial": t.id, "index": t.index, "protocol": t.protocol, "rate": t.rate,
                           "repeat": t.repeat, "state": s.state, "initial_working_set": st.normal,
                           "placement": s.throttle.placement if st.exp.throttled else None,
                           "fail_open": s.throttle.fail_open if st.exp.throttled else None,
                           "started": time.time(), "status": "error", "reason": None, "phases": {}}
    tdir = st.run.trial_dir(t.id)
    phases = rec["phases"]
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = round(now - mark, 3)
        mark = now

    cap = Capture(h, segment=st.segment, name=CAPTURE)
    state_dirs = {srv: f"{h.prefix(srv)}/run/worm/{t.id}" for srv in st.servers}
    tlog = f"{st.throttle.prefix}/log/throttle-{t.id}.jsonl" if st.throttle else None
    terr = f"{st.throttle.prefix}/log/throttle-{t.id}.log" if st.throttle else None   # its stderr, this trial's
    inj_if = next(i.ifname for i in st.lab.host(st.injector).interfaces if i.segment.startswith("experimental"))
    places: dict[str, Any] = {n: HostPlace(h, n) for n in dict.fromkeys([*st.servers, st.sniffer])}
    if st.throttle:
        places[st.throttle.label] = st.throttle
    watch = Watch(places)
    capture = service(st.sniffer, h.prefix(st.sniffer), cap.name, "tcpdump (the capture)", log=cap.log)
    stopped = False
    try:
        # -- reset: leftovers of an interrupted trial, the injector back on the experimental LAN
        # a trial's files from an earlier run on the same lab must not be read as this trial's (the throttle
        # appends to its log: an old "blocked" line would end this trial at once)
        stale = [lambda srv=srv: h.sh(srv, f"rm -rf {state_dirs[srv]}", timeout=15).check() for srv in st.servers]
        if tlog:
            stale.append(lambda: st.throttle.sh(f"rm -f {tlog} {terr}", timeout=15).check())
        reset(st, extra=[lambda: h.sh(st.injector, f"ip link set {inj_if} up", timeout=15).check(), *stale])
        phase("reset")

        # -- capture, throttle and worm servers (in parallel: they are independent), each watched from its start
        def start_server(srv: str) -> None:
            argv = h.module_argv(srv, "testworm", "server", "--listen", f"{_ip(st.lab, srv, st.segment)}:{s.worm.port}",
                                 "--key", f"{h.prefix(srv)}/etc/worm.key", "--state-dir", state_dirs[srv],
                                 "--lab-ranges", *st.exp_ranges, "--allow", s.worm.scan, "--max-generations", "0")
            log = f"{state_dirs[srv]}/server.log"       # this trial's (the state directory is)
            h.start(srv, "worm-server", argv, log=log)
            watch.add(service(srv, h.prefix(srv), "worm-server", "the worm server", log=log))

        def start_throttle() -> None:
            if not st.throttle:
                return
            th = s.throttle
            argv = st.throttle.module_argv("throttle", "run", "--mode", th.placement, "--interface",
                                           st.throttle_iface, "--events", tlog, "--working-set",
                                           str(th.working_set_size), "--period", str(th.release_period_s),
                                           "--limit", str(th.delay_queue_limit), "--policy", th.policy,
                                           "--protocols", t.protocol, *([] if th.fail_open else ["--fail-closed"]))
            st.throttle.start("throttle", argv, log=terr)
            watch.add(service(st.throttle.label, st.throttle.prefix, "throttle", "the throttle daemon", log=terr,
                              note=FAIL_OPEN_NOTE if th.fail_open else FAIL_CLOSED_NOTE))
            ready_s = READY_S * (EMULATED_SLOWDOWN if st.emulated else 1)
            deadline = time.monotonic() + ready_s     # ready once its rules are in: it logs its config then
            while not st.throttle.contains(tlog, '"event":"config"'):
                if time.monotonic() > deadline:
                    raise TestbedError(f"the throttle on {st.throttle.label} did not come up within {ready_s:g} s"
                                       + (" (an emulated guest)" if st.emulated else ""))
                time.sleep(0.05)

        watch.add(capture)
        parallel([lambda srv=srv: start_server(srv) for srv in st.servers]
                 + [start_throttle, lambda: cap.start(st.canary[0], st.canary[1])])
        phase("start")

        # -- the host's normal traffic fills its working set (state: full)
        if st.normal:
            h.access.run(st.infected, ["python3", "-c", _NORMAL, t.protocol, *st.normal], timeout=15, check=True)
        # -- the injector triggers the worm on the infected host, then leaves the experiment
        trig = h.module_argv(st.injector, "testworm", "trigger", f"{_ip(st.lab, st.infected, st.segment)}:{s.worm.port}",
                             "--key", f"{h.prefix(st.injector)}/etc/worm.key", "--lab-ranges", *st.exp_ranges,
                             "--rate", f"{t.rate:g}", "--protocol", t.protocol, "--port", str(s.worm.port),
                             "--targets", s.worm.scan, "--allow", s.worm.scan, "--strategy", s.worm.strategy,
                             "--seed", str(s.seed + t.index), "--max-attempts", str(s.worm.max_attempts),
                             "--lifetime", f"{s.worm.lifetime_s:g}", "--connect-timeout",
                             f"{s.worm.connect_timeout_s:g}", "--max-generations", "0")
        if s.worm.profile:      # the profile chooses the strategy (explicit options override a profile's)
            i = trig.index("--strategy")
            trig[i:i + 2] = ["--profile", s.worm.profile]
        # one round trip: trigger, and on success take the injector off the experimental LAN
        r = h.sh(st.injector, f"{quote(trig)} && ip link set {inj_if} down", timeout=30)
        if not r.ok:
            raise TestbedError(f"the injector's trigger was refused: {(r.stderr or r.stdout).strip()[-300:]}")
        rec["triggered"] = time.time()
        # the scanner the trigger started, a child of the infected host's worm server, which logs its end
        worm_dir = state_dirs[st.infected]
        scanner = watch.add(logged_child(st.infected, "the worm's scanner", events=f"{worm_dir}/server.jsonl",
                                         exit_event="scan_exit", log=f"{shlex.quote(worm_dir)}/scan-*.stderr"))
        phase("trigger")

        # -- wait for the stop condition: blocked, the worm's own bounds, or the trial timeout
        died: list[Death] = []
        try:
            rec["status"], rec["reason"] = wait_stop(st, watch, scanner, tlog, worm_dir, s.timeout_s)
        except ProcessDied as exc:
            died = exc.deaths
        phase("run")
        if rec["status"] == "interrupted":       # not a result: stop what runs, and let --resume redo it
            stop_all(watch)
            cap.stop(check=False)
            return rec

        # -- stop everything, the worm first; collect (after a death too: the files show what happened)
        died += stop_all(watch, known=died)
        stopped = True
        stats = cap.stop(check=False)   # judged below, once the files are safe
        rec["capture"] = stats.to_dict()
        if capture not in (d.watched for d in died):
            died += [d for d in [stop_verdict(capture, cap.stop_report)] if d]
        try:
            files = collect(st, t, tdir, cap, tlog, state_dirs)
        except TestbedError as exc:
            if not died:
                raise
            files, rec["collect_error"] = {}, exc.message
        rec["files"] = {k: str(Path(v).relative_to(st.run.path)) for k, v in files.items() if v}
        phase("collect")
        if died:
            watch.tails(died)
            raise ProcessDied(died)
        if stats.problem():
            raise CaptureError(f"{stats.problem()}: the trial's wire figures cannot be trusted")

        # -- analyse and compare with the model
        evaluate(st, t, rec, files, tdir)
        phase("analyse")
    except ProcessDied as exc:
        rec["status"], rec["reason"] = "error", exc.message
        rec["died"] = [d.to_dict() for d in exc.deaths]
    except TestbedError as exc:
        rec["status"], rec["reason"] = "error", exc.message
    except Exception as exc:    # a trial that fails must not end the sweep
        rec["status"], rec["reason"] = "error", f"{type(exc).__name__}: {exc}"
    finally:
        rec["watched"] = [w.label for w in watch.items]
        if rec["status"] == "error":          # leave nothing running behind a failed trial
            try:
                if not stopped:
                    stop_all(watch)
                    if "capture" not in rec and capture in watch.items:
                        cap.stop(check=False)
                if any(d.get("service") == "throttle" for d in rec.get("died", [])):
                    clear_throttle(st)
            except Exception as exc:     # the failure is already recorded; say this too
                rec["reason"] = f"{rec['reason']}; cleaning up also failed: {exc}"
        rec["duration_s"] = round(time.time() - rec["started"], 3)
    return rec


def reset(st: Setup, extra=()) -> None:
    """Stop whatever a previous (interrupted) trial left running."""
    h = st.hosts
    jobs = [(srv, "worm-server") for srv in st.servers] + [(st.sniffer, CAPTURE)]
    more = [lambda: st.throttle.stop("throttle", timeout=5)] if st.throttle else []
    parallel([lambda j=j: h.stop(j[0], j[1], timeout=5) for j in jobs] + more + list(extra))


def wait_stop(st: Setup, watch: Watch, scanner: Watched, tlog: str | None, worm_dir: str,
              timeout: float) -> tuple[str, str | None]:
    """Poll until the throttle blocks, the worm's own bounds end it, or the timeout. Each poll is one round
    trip to each place the stop condition reads (the infected host, the throttle's), which also says how every
    process watched there stands, and now and then one to another place in turn (orchestrator.experiment.watch); one
    that died (or a scanner stopped by anything but its own bounds) raises ProcessDied. A last look at every
    place before returning leaves nothing between the last poll and the stop unseen."""
    extra: dict[str, dict[str, str]] = {
        st.infected: {"scan": f"ls {worm_dir}/scan-*.jsonl 2>/dev/null | head -n 1 | xargs -r tail -n 1"}}
    if tlog:
        extra.setdefault(st.throttle.label, {})["blocked"] = (
            f"grep -q -F {shlex.quote(BLOCKED)} {shlex.quote(tlog)} && echo blocked")
    deadline = time.monotonic() + timeout

    def done(status: str, reason: str) -> tuple[str, str]:
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
        if tlog and out.get(st.throttle.label, {}).get("blocked") == "blocked":
            time.sleep(AFTER_BLOCK_S)
            return done("ok", "blocked")
        last = out.get(st.infected, {}).get("scan", "")
        if last:
            try:
                ev = json.loads(last)
            except ValueError:
                ev = {}
            if ev.get("event") == "stop":
                why = ev.get("reason")
                if why not in WORM_BOUNDS:
                    d = Death(scanner, None, "mid-trial", how=f"stopped with reason '{why}'"
                              + (f" ({ev['error']})" if ev.get("error") else "") + ", not at its own bounds")
                    watch.tails([d])
                    raise ProcessDied([d])
                return done("ok", f"worm stopped: {why}")
        if time.monotonic() > deadline:
            return done("timeout", f"not blocked within {timeout:g} s" if tlog else f"still scanning after {timeout:g} s")
        time.sleep(POLL_S)


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


def clear_throttle(st: Setup) -> None:
    """Remove the rules a dead throttle left behind (fail-closed, they would drop the host's new connections
    until the next trial's throttle replaced them)."""
    r = st.throttle.run(st.throttle.module_argv("throttle", "clear"), timeout=30)
    if not r.ok:
        raise TestbedError(f"the dead throttle's rules on {st.throttle.label} could not be removed: "
                           f"{(r.stderr or r.stdout).strip()[-300:]}")


def collect(st: Setup, t: TrialSpec, tdir: Path, cap: Capture, tlog: str | None,
            state_dirs: dict[str, str]) -> dict[str, Path | None]:
    h = st.hosts
    files: dict[str, Path | None] = {}

    def pcap() -> None:
        files["pcap"] = cap.fetch(tdir / "capture.pcap")

    def throttle_log() -> None:
        files["throttle_log"] = tdir / "throttle.jsonl"
        st.throttle.fetch(tlog, files["throttle_log"])

    def worm_logs(srv: str) -> None:
        listing = h.sh(srv, f"ls {state_dirs[srv]} 2>/dev/null").stdout.split()
        for name in (n for n in listing if n.endswith(".jsonl")):
            key = "worm_log" if (srv == st.infected and name.startswith("scan-")) else f"{srv}:{name}"
            dest = tdir / (f"worm-{srv}-{name}" if key != "worm_log" else "worm.jsonl")
            h.access.get(srv, f"{state_dirs[srv]}/{name}", dest)
            files[key] = dest
    parallel([pcap, *([throttle_log] if tlog else []), *(lambda srv=srv: worm_logs(srv) for srv in st.servers)])
    return files


def evaluate(st: Setup, t: TrialSpec, rec: dict[str, Any], files: dict[str, Path | None], tdir: Path) -> None:
    s = st.exp.spec
    src = _ip(st.lab, st.infected, st.segment)
    if not files.get("worm_log"):
        raise TestbedError(f"the worm on {st.infected} left no scan log: it never started scanning")
    sniffer = "after" if (st.exp.throttled and s.throttle.placement == "host") or not st.exp.throttled else "before"
    # the logs are on the infected host's clock, the capture on the sniffer's: VMs keep their own clocks, so
    # measure the offset from packets the throttle accepted (namespaces share one clock: it comes out ≈ 0)
    pk = read_capture(files["pcap"])
    att = extract_attempts(pk)
    tlog = files.get("throttle_log")
    verdicts = [json.loads(x) for x in Path(tlog).read_text().splitlines() if x.strip()] if tlog else []
    worm_lines = Path(files["worm_log"]).read_text().splitlines()
    unseen = _unseen(st)
    answers = answers_measurable(st, t)
    link: float | None = 0.0
    if answers and not st.shared_clock:     # a VM's sniffer: tie its clock to the throttle's first
        link = agreement.answer_clock(att, verdicts, src=src)
    offset, matched = 0.0, 0
    if verdicts and sniffer == "after":
        found, matched = agreement.clock_offset(att, verdicts, src=src)
        offset = found or 0.0
    an = analyse_trial(files["pcap"], throttle_log=tlog, worm_logs=[files["worm_log"]],
                       settings=MetricsSettings(sniffer=sniffer, tolerance_s=0.25), capture_offset_s=offset)
    d = an.to_dict()
    atomic_write_json(tdir / "analysis.json", d)
    sm = next((x for x in d["metrics"]["sources"] if x["src"] == src), {})
    att.ts = att.ts - offset
    wire = agreement.wire_counts(att, src=src, scan=s.worm.scan, dport=s.worm.port, protocol=t.protocol,
                                 block_wall=sm.get("blocked_wall"), first_wall=sm.get("first_attempt_wall"))
    stop_s = sm.get("stopping_time_s")
    if stop_s is not None and sm.get("stopping_time_clock") == "wall" and verdicts:
        # worm and throttle on different kernels (a VM and its hypervisor): their wall clocks disagree
        skew, _ = agreement.send_offset(worm_lines, verdicts, src=src)
        if skew is not None:
            stop_s -= skew
            rec["worm_throttle_clock_offset_s"] = skew
    measured: dict[str, Any] = {
        "blocked": bool(sm.get("blocked")), "stop_s": stop_s,
        "first_attempt_wall": sm.get("first_attempt_wall"), "blocked_wall": sm.get("blocked_wall"),
        "achieved_rate": sm.get("worm_scan_rate"), "attempts": sm.get("worm_attempts"),
        "distinct_destinations": sm.get("worm_distinct_destinations"),
        "max_queue_len": sm.get("max_queue_len"), "throttle_events": sm.get("throttle_events"),
        "wire_attempts": wire["wire_attempts"], "wire_packets": wire["wire_packets"],
        "capture_clock_offset_s": offset, "capture_clock_matches": matched,
    }
    if sniffer == "after":
        measured.update(out_before_block=wire["out_before_block"],
                        packets_out_before_block=wire["packets_out_before_block"],
                        out_after_block=wire["out_after_block"])
    elif answers and link is not None:
        # in front of the throttle: what got through shows as the answers coming back (the gateway's RSTs),
        # on the capture's clock — the block placed there by the measured link between the two clocks
        block = sm.get("blocked_wall")
        ans = agreement.answered_counts(pk, src=src, scan=s.worm.scan, dport=s.worm.port,
                                        block_wall=None if block is None else block + link, unseen=unseen,
                                        tolerance_s=agreement.answer_tolerance(st.emulated))
        measured.update(out_before_block=ans["out_before_block"], out_after_block=ans["out_after_block"],
                        out_measured_from="answers", answer_clock_offset_s=link)
    else:
        measured.update(out_before_block=None, out_after_block=None)
    if sniffer == "before" or not st.exp.throttled:       # the capture sees the worm unthrottled
        measured["achieved_rate_wire"] = wire.get("wire_rate")
    rec["measured"] = {k: finite(v) for k, v in measured.items()}
    rec["findings"] = [{k: f[k] for k in ("code", "severity", "message", "count") if k in f}
                       for f in d.get("findings", []) if f.get("severity") in ("warning", "error")]
    if st.exp.throttled:
        cfg = agreement.throttle_config(s.throttle, st.normal)
        # arrivals closer to a release tick than the daemon's own measured decision jitter are ties: the model
        # gives every outcome their orderings allow, beside its strict (exact-clock) prediction
        jitter = agreement.decision_jitter(verdicts, period_s=s.throttle.release_period_s)
        model = agreement.model_trial(worm_lines, src=src, config=cfg, placement=s.throttle.placement,
                                      protocol=t.protocol, retransmit=st.retransmit, unseen=unseen,
                                      tie_window_s=jitter["window_s"], answered=s.gateway_empty == "reset")
        if "orderings" in model:
            model["orderings"]["jitter"] = jitter
        rec["model"] = {k: finite(v) if not isinstance(v, list) else v for k, v in model.items()}
        rec["agreement"] = agreement.judge(rec["measured"], rec["model"], **st.tolerance)
    else:
        rec["model"] = None
        rec["agreement"] = agreement.judge(rec["measured"], None, **st.tolerance)
