"""Trials in parallel on one machine (`testbed run --parallel K`): K copies of the experiment's lab, each a
lab of its own (the first under the lab file's name, the others `NAME-2` … `NAME-K`, as `testbed up --name`
makes them: own namespaces or VMs, own journal, isolated and audited exactly as the one lab of a serial run),
built and provisioned side by side; a worker per lab takes the next trial of one queue, longest first by the
model's expected time (schedule.longest_first), so the slow low-rate trials start at once and the short ones
fill in around them. Each trial is judged for disturbance and redone if need be (disturb.judged_trial); the
run directory is written after every trial, its records in plan order, so `--resume` continues exactly.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.experiment import disturb, schedule
from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.setup import Setup
from orchestrator.experiment.spec import Experiment
from orchestrator.lab.programs import LabHosts
from orchestrator.labfile import hypervisors
from orchestrator.labfile.constants import NAME_PATTERN

PER_CPU = 4             # labs per CPU by default: a trial mostly waits (a 2/s worm for its block) — measured
LAB_MIB = 512           # memory a namespace lab instance may take (its daemons, worm, capture): measured ≤ 200
MAX_DEFAULT = 16
MAX_PARALLEL = 64         # asked for with --parallel K
NAME_MAX = int(NAME_PATTERN.rsplit("{0,", 1)[1].split("}")[0]) + 1


def available_mib() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            return next(int(line.split()[1]) // 1024 for line in fh if line.startswith("MemAvailable"))
    except (OSError, StopIteration, ValueError):
        return None


def default_parallel(exp: Experiment, todo: int) -> int:
    """The default K: on the netns provider PER_CPU labs per CPU, as many as the available memory holds at
    LAB_MIB each, no more than the trials to run (and MAX_DEFAULT); on libvirt one lab instance per hypervisor
    the lab file lists (`libvirt.uris`; one with `uri`: a VM lab takes GiBs — ask for more with --parallel)."""
    if exp.lab.provider == "libvirt":
        return max(1, min(len(hypervisors.listed(exp.lab.options)), todo))
    if exp.lab.provider != "netns":
        return 1
    mem = available_mib()
    k = min(PER_CPU * (os.cpu_count() or 1), MAX_DEFAULT, (mem // LAB_MIB) if mem else MAX_DEFAULT)
    return max(1, min(k, todo))


def instance_name(base: str, i: int) -> str:
    """Lab instance i (from 1) of lab `base`: the lab itself, then `base-2`, … (shortened to stay a name)."""
    if i == 1:
        return base
    tail = f"-{i}"
    return base[:NAME_MAX - len(tail)].rstrip("-") + tail


def parse_parallel(text: str | None) -> int | None:
    """`--parallel K` (1 ≤ K ≤ MAX_PARALLEL) → K; `auto` (or nothing) → None, the default for the machine;
    anything else is a usage error that names the option."""
    t = (text or "auto").strip().lower()
    if t == "auto":
        return None
    if not t.isdigit():
        raise UsageError(f"--parallel takes a number of lab instances (1 to {MAX_PARALLEL}) or auto, not {text!r}")
    k = int(t)
    if not 1 <= k <= MAX_PARALLEL:
        raise UsageError(f"--parallel {text}: the number of lab instances must be 1 to {MAX_PARALLEL} "
                         "(1 runs the trials one after another)")
    return k


def renamed(exp: Experiment, name: str) -> Experiment:
    """The experiment with its lab loaded under another name (a lab of its own: namespaces, journal)."""
    if name == exp.lab.name:
        return exp
    from orchestrator.labfile.load import load_lab
    lab = load_lab(exp.lab.source, provider_override=exp.lab.provider, name_override=name)
    return dataclasses.replace(exp, lab=lab)


def hypervisor(exp: Experiment, i: int) -> str | None:
    """The hypervisor lab instance i (from 1) is built on: a libvirt lab's uris in turn (instance i on
    uris[(i − 1) mod n], so K > n puts several on one); None on other providers."""
    return hypervisors.uri_for(exp.lab.options, i - 1) if exp.lab.provider == "libvirt" else None


def instance(exp: Experiment, i: int) -> Experiment:
    """The experiment on lab instance i: the same file, its lab loaded under the instance's name and placed on
    its hypervisor (the lab's options name it: its session builds it there, its record keeps it)."""
    iexp = renamed(exp, instance_name(exp.lab.name, i))
    return dataclasses.replace(iexp, lab=hypervisors.on(iexp.lab, hypervisor(exp, i)))


@dataclasses.dataclass
class Shared:
    """What the workers share: the queue, the run's records, the stop event, and the lock over them."""

    queue: deque[TrialSpec]
    stop: threading.Event
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    running: int = 0
    errors: list[BaseException] = dataclasses.field(default_factory=list)
    ready: list[str] = dataclasses.field(default_factory=list)      # the lab instances that came up
    lost: dict[str, BaseException] = dataclasses.field(default_factory=dict)    # instance name → its failure

    def take(self) -> TrialSpec | None:
        with self.lock:
            if self.stop.is_set() or not self.queue:
                return None
            self.running += 1
            return self.queue.popleft()


Session = Callable[..., AbstractContextManager[LabHosts]]


def sweep_parallel(exp: Experiment, k: int, todo: list[TrialSpec], *, session: Session, store,
                   prepare: Callable[[Experiment, LabHosts], Setup], trial: Callable[[Setup, TrialSpec], Any],
                   record: Callable[[TrialSpec, Any], None], estimate: Callable[[TrialSpec], float],
                   stop: threading.Event, keep: bool = False, console=None, builds: int | None = None) -> Shared:
    """Run `todo` on k lab instances. `prepare` turns a lab session into its Setup, `trial` runs one trial on
    it, `record` writes a finished trial (called under the lock). At most `builds` instances are being built
    at once (default: all), each starting on the queue as soon as it is up; one whose turn comes after the
    queue is empty is not built. All at once is the default as measured: the paper sweep on 2 CPUs with 12
    instances built two at a time had the first up at 16 s but the last at 140 s (a build beside running
    trials is slow, and loads them: a long trial was late by 112 ms while the others were built), where 8
    built together were all up at 39.5 s. Returns the shared state (its `errors`: instances that failed; the
    caller raises when trials were left undone)."""
    sh = Shared(deque(schedule.longest_first(todo, estimate)), stop)
    gate = threading.Semaphore(builds or max(1, k))

    def worker(i: int) -> None:
        name = instance_name(exp.lab.name, i)
        try:
            iexp = instance(exp, i)     # inside: a lab that cannot be loaded is a lost instance, with its record
            with ExitStack() as stack:
                with gate:                       # built and provisioned a few at a time; then on to the queue
                    if stop.is_set() or not sh.queue:    # nothing left for it: not built
                        return
                    hosts = stack.enter_context(session(iexp, store, keep=keep, console=console))
                with sh.lock:                    # prepare writes the manifest: one at a time
                    st = dataclasses.replace(prepare(iexp, hosts), stop=stop)
                    sh.ready.append(iexp.lab.name)
                meter = disturb.LoadMeter(lambda: sh.running)
                while (t := sh.take()) is not None:
                    try:
                        rec = disturb.judged_trial(st, t, trial, meter=meter)
                    finally:
                        with sh.lock:
                            sh.running -= 1
                    if rec.status == "interrupted":
                        break
                    rec.extra["lab_instance"] = iexp.lab.name
                    with sh.lock:
                        record(t, rec)
        except BaseException as exc:     # this instance is lost; the others go on with the queue
            with sh.lock:
                sh.errors.append(exc)
                sh.lost[name] = exc

    threads = [threading.Thread(target=worker, args=(i,), name=f"lab-{i}", daemon=True)
               for i in range(1, max(1, min(k, len(todo))) + 1)]
    for th in threads:
        th.start()
    try:
        for th in threads:
            while th.is_alive():
                th.join(0.5)
    except BaseException:               # a second Ctrl-C: stop the workers and let them tear down
        stop.set()
        for th in threads:
            th.join(60)
        raise
    return sh
