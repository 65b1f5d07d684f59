"""`testbed run`: build the lab, provision it, sweep the scan rates with repeats, write the run directory.

The lab is built and provisioned once per run and reused across trials; results are written after every
trial (whole files, renamed into place), so an interrupted run keeps what it measured and `--resume`
continues with the trials it has not done. Ctrl-C or SIGTERM stops after the current step, writes, and
tears the lab down (unless --keep).
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator.errors import ExperimentError
from orchestrator.experiment import (
    benign,
    benignspec,
    disturb,
    hvplace,
    pool,
    schedule,
    spreadrun,
    wormbenign,
)
from orchestrator.experiment.mechspec import MechanismRun
from orchestrator.experiment.record import TrialRecord, TrialSpec
from orchestrator.experiment.rundir import RunDir, new_run_id, run_status, runner_record, summarise
from orchestrator.experiment.setup import Setup
from orchestrator.experiment.spec import Experiment, check_overrides, load_experiment
from orchestrator.experiment.spreadtrial import run_spread_trial
from orchestrator.experiment.trial import run_trial
from orchestrator.lab import lifecycle, provision
from orchestrator.lab.programs import LabHosts
from orchestrator.lab.ssh import Access
from orchestrator.localrun import run
from orchestrator.providers.state import StateStore

OVERHEAD_S = 2.0      # planning figure per trial (reset + start + collect + analyse)
REPO = Path(__file__).resolve().parents[2]


def plan_trials(exp: Experiment, rates: list[float] | None = None, repeats: int | None = None) -> list[TrialSpec]:
    """Every mechanism over every protocol, rate and repeat (mechanism outermost: one at a time on the lab)."""
    s = exp.spec
    if s.kind == "spread":
        return spreadrun.plan_spread(exp, rates, repeats)
    out: list[TrialSpec] = []
    for m in exp.mechanisms:
        named = None if exp.legacy and not exp.spec.sweep else m.key
        for proto in s.protocols:
            for rate in s.rates if rates is None else rates:
                for rep in range(1, (s.repeats if repeats is None else repeats) + 1):
                    out.append(TrialSpec(len(out), proto, float(rate), rep, named))
    return out


def estimate_s(exp: Experiment, t: TrialSpec) -> float:
    """Expected wall time of a trial: the model's stopping time (or the timeout), plus overhead."""
    s = exp.spec
    if s.kind == "spread":
        return spreadrun.estimate_spread_s(exp, t)
    m = mechanism_of(exp, t)
    if s.kind == "benign":
        return benign.estimate_s(exp, t) + OVERHEAD_S
    if s.benign is not None:       # beside the worm: the lead, then the session to its end
        return s.benign.duration_s + s.benign.timeout_s + OVERHEAD_S
    if m.name != "williamson":
        return min(s.timeout_s, s.worm.lifetime_s, s.worm.max_attempts / t.rate) + OVERHEAD_S
    from throttle.core import ThrottleConfig
    from throttle.model import predict_constant_rate
    cfg = ThrottleConfig(**m.params)
    p = predict_constant_rate(t.rate, protocol=t.protocol, config=cfg,
                              initial_working_set=m.params["working_set_size"] if s.state == "full" else 0,
                              placement=m.placement, horizon_s=s.timeout_s)
    return min(p.stop_s if p.stop_s is not None else s.timeout_s, s.timeout_s) + OVERHEAD_S


def mechanism_of(exp: Experiment, t: TrialSpec) -> MechanismRun:
    """The mechanism a trial runs (a legacy experiment's one, or the one its id names)."""
    return next((m for m in exp.mechanisms if m.key == t.mechanism), exp.mechanisms[0])


def versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": platform.python_version(), "kernel": platform.release()}
    for pkg in ("worm-testbed", "ansible-core", "ansible-runner", "paramiko", "numpy", "NetfilterQueue"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    for tool, argv in (("tcpdump", ["tcpdump", "--version"]), ("iproute2", ["ip", "-V"]),
                       ("iptables", ["iptables", "--version"])):
        r = run(argv, timeout=10)
        out[tool] = (r.stdout or r.stderr).strip().splitlines()[0] if r.ok and (r.stdout or r.stderr) else None
    return out


def git_info() -> dict[str, Any]:
    head = run(["git", "-C", str(REPO), "rev-parse", "HEAD"], timeout=10)
    dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], timeout=10)
    return {"commit": head.stdout.strip() if head.ok else None, "dirty": bool(dirty.stdout.strip()) if dirty.ok else None}


def machine() -> dict[str, Any]:
    mem = None
    try:
        mem = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1]) // 1024
    except (OSError, StopIteration):
        pass
    return {"hostname": socket.gethostname(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "memory_mib": mem}


class _Stop:
    """First SIGINT/SIGTERM: finish the current step, write, tear down. A second one: stop at once."""

    def __init__(self, setup_ref: dict):
        self.ref, self.count = setup_ref, 0
        self.saved: dict[int, Any] = {}     # signal -> the handler it had

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        self.count += 1
        st = self.ref.get("setup")
        if st is not None:
            st.stop.set()
        if self.count > 1 or st is None:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, h in self.saved.items():
            signal.signal(sig, h)

    @property
    def requested(self) -> bool:
        return self.count > 0


@dataclass
class RunOptions:
    """How `run_experiment` runs a file: overrides of its plan, where the run goes, and the hooks of whoever
    calls it (the CLI indexes and reports a run through `on_open`/`on_finish`; the runner writes only its
    run directory)."""

    rates: list[float] | None = None          # overriding the file's
    repeat: int | None = None
    out: str | Path | None = None             # the run directory (default results/<run id>)
    keep: bool = False                        # leave the lab up afterwards
    resume: str | Path | None = None          # continue the interrupted run in this directory
    shard: tuple[int, int] | None = None      # (I, N): run only shard I of N of the plan (schedule.shard_of)
    parallel: int | None = 1                  # lab instances running trials side by side (None: pool's default)
    name: str | None = None                   # the lab's name (instances: NAME, NAME-2, …), not the lab file's
    store: StateStore | None = None
    console: Any = None                       # where progress lines go (rich Console), or None
    progress: Callable[[int, int, float], Any] | None = None    # (planned, done, est_s) -> a sweep bar
    on_open: Callable[[RunDir], None] | None = None      # once the run directory holds its manifest
    on_finish: Callable[[RunDir], None] | None = None    # after the last write, also when interrupted
    lab: Callable[..., AbstractContextManager[LabHosts]] | None = None   # default: lab_session


@dataclass
class OpenRun:
    rdir: RunDir
    trials: list[dict[str, Any]]          # the records so far (a resumed run's, then this run's)
    done: set[str]
    plan: list[TrialSpec]

    @property
    def todo(self) -> list[TrialSpec]:
        return [t for t in self.plan if t.id not in self.done]


def run_experiment(path: str | Path, options: RunOptions | None = None) -> RunDir:
    """Run the experiment file at `path`: open its run directory (or resume one), run the sweep on its lab,
    and finish the run directory. An interrupted run raises ExperimentError after writing what it measured."""
    o = options or RunOptions()
    store = o.store or StateStore()
    check_overrides(o.rates, o.repeat)
    exp = load_experiment(path)
    if o.name:
        exp = pool.renamed(exp, o.name)
    run = open_run(exp, o)
    if o.on_open:      # e.g. indexed from the start: `results list` shows it running, or died if its runner is gone
        o.on_open(run.rdir)
    ref: dict[str, Any] = {}
    status, failure = "running", None
    try:
        with _Stop(ref) as stopper:
            k = pool.default_parallel(exp, len(run.todo)) if o.parallel is None else min(o.parallel, len(run.todo))
            if k > 1 and exp.spec.kind in ("spread", "benign"):     # their trials are not judged for disturbance
                if o.parallel is not None:
                    _say(o.console, f"a {exp.spec.kind} run takes its trials one at a time: --parallel {o.parallel} "
                                    "applies to stopping-speed and baseline runs")
                k = 1
            elif k > 1 and exp.spec.benign is not None:     # benign delays beside the worm: not judged either
                if o.parallel is not None:
                    _say(o.console, f"a run with benign traffic beside the worm takes its trials one at a time "
                                    f"(its benign delays are not judged for disturbance): --parallel {o.parallel} "
                                    "ignored")
                k = 1
            if k > 1:
                refuse_other_lab(exp, store)     # here, not in instance 1's thread, where it would be "lost"
                sweep_parallel(exp, run, o, store, k, ref)
            else:
                with (o.lab or lab_session)(exp, store, keep=o.keep, console=o.console) as hosts:
                    st = prepare(exp, hosts, run.rdir, store)
                    ref["setup"] = st
                    if stopper.requested:
                        st.stop.set()
                    sweep(exp, st, run, o.progress)
            status = "interrupted" if len(run.trials) < len(run.plan) else "complete"
    except KeyboardInterrupt:
        status = "interrupted"
    except BaseException as exc:       # the lab could not be built or provisioned, or the runner failed
        status, failure = "failed", getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        raise
    finally:
        finish_run(run, status, failure)
    if o.on_finish:
        o.on_finish(run.rdir)
    if status == "interrupted":
        raise ExperimentError(f"run interrupted after {len(run.trials)} of {len(run.plan)} trials; results so far "
                              f"are in {run.rdir.path}", hint=f"continue with: testbed run {path} --resume {run.rdir.path}")
    return run.rdir


def open_run(exp: Experiment, o: RunOptions) -> OpenRun:
    """A new run directory with its manifest, or the one being resumed (with the trials it finished)."""
    rates, repeat = o.rates, o.repeat
    if o.resume:
        rdir = RunDir(o.resume)
        man = rdir.manifest()
        if man["spec_hash"] != exp.spec_hash:
            raise ExperimentError(f"{exp.source} changed since run {man['run_id']} started; resume needs the same file")
        if run_status(man) == "running":
            r = man.get("runner") or {}
            raise ExperimentError(f"run {man['run_id']} is still running (pid {r.get('pid')} on {r.get('host')}); "
                                  "resume it once it has stopped")
        rates, repeat = man["plan"]["rates"], man["plan"]["repeats"]
        trials = rdir.trials()
        done = {t["trial"] for t in trials if t.get("status") in ("ok", "timeout", "error")}
        trials = [t for t in trials if t["trial"] in done]
        shard = man.get("shard")
        if o.shard and (not shard or (shard["index"], shard["count"]) != tuple(o.shard)):
            raise ExperimentError(f"run {man['run_id']} is not shard {o.shard[0]}/{o.shard[1]}; resume it without "
                                  "--shard (it keeps its own share)")
        man.update(status="running", runner=runner_record())
        rdir.write_manifest(man)
        return OpenRun(rdir, trials, done, planned(exp, rates, repeat, shard and (shard["index"], shard["count"])))
    run_id = new_run_id(exp.spec.experiment)
    rdir = RunDir(o.out or Path("results") / run_id)
    if rdir.exists():
        raise ExperimentError(f"{rdir.path} already holds a run; use --resume {rdir.path} or another --out")
    rdir.path.mkdir(parents=True, exist_ok=True)
    rdir.write_manifest({
        "run_id": run_id, "experiment": exp.spec.model_dump(mode="json"), "spec_hash": exp.spec_hash,
        "source": exp.source, "lab": exp.lab.to_dict(), "seed": exp.spec.seed, "git": git_info(),
        "versions": versions(), "machine": machine(), "argv": sys.argv,
        "plan": {"rates": exp.spec.rates if rates is None else rates,
                 "repeats": exp.spec.repeats if repeat is None else repeat},
        "started": time.time(), "status": "running", "runner": runner_record()}
        | ({"shard": shard_record(exp, rates, repeat, o.shard)} if o.shard else {}))
    return OpenRun(rdir, [], set(), planned(exp, rates, repeat, o.shard))


def planned(exp: Experiment, rates, repeat, shard: tuple[int, int] | None) -> list[TrialSpec]:
    """The run's plan: the whole sweep, or shard I of N of it (the same indices, so the same seeds)."""
    plan = plan_trials(exp, rates, repeat)
    return plan if shard is None else schedule.shard_of(plan, lambda t: estimate_s(exp, t), shard)


def shard_record(exp: Experiment, rates, repeat, shard: tuple[int, int]) -> dict[str, Any]:
    """What a shard's manifest says of it: which share, its trials and the whole plan's (for the merge)."""
    return {"index": shard[0], "count": shard[1], "trials": [t.id for t in planned(exp, rates, repeat, shard)],
            "all": [t.id for t in plan_trials(exp, rates, repeat)]}


@contextmanager
def lab_session(exp: Experiment, store: StateStore, *, keep: bool = False, console=None) -> Iterator[LabHosts]:
    """The experiment's lab, built (or reused when it is up from the same lab file), reachable over SSH and
    provisioned; torn down afterwards unless it was reused or `keep`."""
    lab_name = exp.lab.name
    rec = store.load(lab_name)
    reused = rec is not None and rec.state == "up"
    try:
        if not reused:
            _say(console, f"building lab {lab_name} ({exp.lab.provider}{hvplace.where_built(exp.lab)}) …")
            build_lab(exp, store)
        else:
            _reuse(exp, store, console)
        with Access(lab_name, store) as acc:
            acc.wait_reachable(timeout=120)
            _say(console, "provisioning …")
            provision.provision_lab(lab_name, store=store, gateway_empty=exp.spec.gateway_empty,
                                    mechanisms=mechanism_roles(exp))
            yield LabHosts(acc)
    finally:
        if not reused and not keep:
            lifecycle.down(lab_name, store=store)


def build_lab(exp: Experiment, store: StateStore):
    """`testbed up` of the experiment's lab under its name, on the hypervisor its options name (a --parallel
    instance's own: pool.instance); its record keeps that hypervisor for every later verb, `down` too."""
    return lifecycle.up(exp.lab.source, name=exp.lab.name, store=store, hypervisor=exp.lab.options.get("uri"))


def mechanism_roles(exp: Experiment) -> list[provision.MechanismRole]:
    """The experiment's mechanism roles beyond the site's own (the reference throttle's is one of them), each
    on the hosts that carry it: the infected host (in a benign run, each of its `benign.hosts`), or the gateway."""
    lab, out = exp.lab, []
    infected = exp.spec.infected or lab.by_role("blade")[0].name
    carriers = (tuple(benignspec.blades_of(exp.spec, lab)) if exp.spec.kind == "benign" and exp.spec.benign
                else (infected,))
    gateway = lab.by_role("gateway")[0].name if lab.by_role("gateway") else None
    for m in exp.mechanisms:
        role = m.role_path or (REPO / m.descriptor.role if m.descriptor and m.descriptor.role else None)
        if role is None or role == REPO / "playbooks/roles/throttle" or m.placement == "wire":
            continue
        hosts = carriers if m.placement == "host" else (gateway,) if gateway else ()
        if hosts:
            out.append(provision.MechanismRole(m.name, role, hosts))
    return list(dict.fromkeys(out))         # a swept mechanism is installed once


def refuse_other_lab(exp: Experiment, store: StateStore) -> None:
    """A lab of the experiment's name that is up must be the one its lab file describes (else exit 1)."""
    lab_name = exp.lab.name
    rec = store.load(lab_name)
    if rec is None or rec.state != "up":
        return
    up_lab = rec.topology
    if up_lab.spec_hash != exp.lab.spec_hash:
        raise ExperimentError(
            f"lab {lab_name} is up, built from another version of its lab file ({up_lab.source}, "
            f"spec {up_lab.spec_hash[:12]}; this experiment's is {exp.lab.spec_hash[:12]})",
            hint=f"`testbed down {lab_name}` and run again, so the run measures the lab it describes")


def _reuse(exp: Experiment, store: StateStore, console) -> None:
    lab_name = exp.lab.name
    refuse_other_lab(exp, store)
    _say(console, f"using lab {lab_name}, which is already up{hvplace.where_built(store.require(lab_name).topology)}"
                  " (it stays up)")
    revived = lifecycle.provider_for(lab_name, store)[0].revive(lab_name)
    if revived:
        _say(console, f"restarted {len(revived)} service(s) that had died: {', '.join(revived)}")


def prepare(exp: Experiment, hosts: LabHosts, rdir: RunDir, store: StateStore) -> Setup:
    """What every trial shares, and how the lab keeps time (from its provider), recorded in the manifest."""
    lab_rec = store.require(exp.lab.name)
    st = Setup.resolve(exp, lab_rec.topology, hosts, rdir)
    clock = hosts.access.provider.clock(lab_rec)
    st.shared_clock, st.emulated = clock.shared, clock.emulated
    man = rdir.manifest()
    man.update(emulated=clock.emulated, domain_type=clock.domain_type, tolerance=st.tolerance,
               retransmit=st.retransmit, retransmit_why=st.retransmit_why)
    rdir.write_manifest(man)
    return st


def run_one(exp: Experiment, st: Setup, t: TrialSpec) -> TrialRecord:
    """One trial of any kind on the lab of `st`: the serial sweep and every parallel instance run this."""
    if exp.spec.kind == "spread":
        return run_spread_trial(spreadrun.SpreadSetup.resolve(st), t)
    one = benign.run_trial if exp.spec.kind == "benign" else \
        wormbenign.run_trial if exp.spec.benign is not None else run_trial
    mst = st.for_mechanism(mechanism_of(exp, t))
    rec = one(mst, t)
    if exp.spec.kind != "benign" and (exp.spec.sweep or exp.spec.benign is not None):
        rec.extra = benign.setting_extra(mst.mech) | rec.extra     # a swept or in-use worm trial: its row's setting
    return rec


def run_judged(exp: Experiment, st: Setup, t: TrialSpec) -> TrialRecord:
    """run_one, its load and timing judged and a disturbed trial redone (disturb.py). The judge reads the
    worm's and the throttle's logs of one worm trial: a spread or benign trial is run as it is."""
    if exp.spec.kind in ("spread", "benign"):
        return run_one(exp, st, t)
    return disturb.judged_trial(st, t, partial(run_one, exp))


def sweep(exp: Experiment, st: Setup, run: OpenRun, progress=None) -> None:
    """The trials not done yet, in order; the run directory is written after each. Stops early when asked."""
    todo = run.todo
    bar = progress(len(run.plan), len(run.done), sum(estimate_s(exp, t) for t in todo)) if progress else None
    for t in todo:
        if st.stop.is_set():
            break
        if bar:
            bar.trial(t)
        rec = run_judged(exp, st, t)
        if rec.status == "interrupted":
            break
        run.trials.append(rec.to_dict())
        _write(run.rdir, run.trials)
        if bar:
            bar.done(t, rec, estimate_s(exp, t))
    if bar:
        bar.close()


def sweep_parallel(exp: Experiment, run: OpenRun, o: RunOptions, store: StateStore, k: int, ref: dict) -> None:
    """The trials not done yet on k lab instances side by side (pool.sweep_parallel); the run directory is
    written after each, its records in plan order. Raises the first instance's failure if trials were left."""
    todo, stop = run.todo, threading.Event()
    ref["setup"] = SimpleNamespace(stop=stop)
    est = partial(estimate_s, exp)
    bar = o.progress(len(run.plan), len(run.done), schedule.makespan(todo, est, k)) if o.progress else None
    man = run.rdir.manifest()
    where = hvplace.Placement(hvplace.plan(exp, k), store)      # {} but on a libvirt lab
    if where.placed:
        _say(o.console, hvplace.line(where.placed))
    run.rdir.write_manifest(man | {"parallel": {"instances": k, "labs": [pool.instance_name(exp.lab.name, i)
                                                                         for i in range(1, k + 1)]}
                                   | ({"hypervisors": where.placed} if where.placed else {})})

    def record(t: TrialSpec, rec) -> None:
        at = where.mark(rec)
        run.trials.append(rec.to_dict())
        run.trials.sort(key=lambda r: r["index"])
        _write(run.rdir, run.trials)
        if bar:
            bar.done(t, rec, est(t), took=(rec.extra.get("load") or {}).get("wall_s"), where=at, share=k)
    sh = pool.sweep_parallel(
        exp, k, todo, session=o.lab or lab_session, store=store, keep=o.keep, console=o.console, stop=stop,
        prepare=lambda e, hosts: prepare(e, hosts, run.rdir, store), estimate=est, record=record,
        trial=partial(run_one, exp))
    if bar:
        bar.close()
    if sh.errors:
        man = run.rdir.manifest()
        man["parallel"]["lost"] = [where.lost(e, next((n for n, x in sh.lost.items() if x is e), None))
                                   for e in sh.errors]
        run.rdir.write_manifest(man)
        if not stop.is_set() and len(run.trials) < len(run.plan):
            raise sh.errors[0]


def finish_run(run: OpenRun, status: str, failure: str | None) -> None:
    man = run.rdir.manifest()
    man.update(status=status, finished=time.time(), trials=len(run.trials), planned=len(run.plan))
    if status == "failed":
        man["error"] = failure
    run.rdir.write_manifest(man)
    _write(run.rdir, run.trials)


def _write(rdir: RunDir, trials: list[dict[str, Any]]) -> None:
    rdir.write_trials(trials)
    rdir.write_summary(summarise(trials))


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text, highlight=False)


def trial_dict(t: TrialSpec) -> dict[str, Any]:
    return asdict(t) | {"id": t.id}
