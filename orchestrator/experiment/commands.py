"""The command lines a trial runs on its hosts, built from the experiment and the lab alone (pure: no I/O):
the worm server on every vulnerable host, the mechanism at its placement (through its registry descriptor; the
throttle's `mark` just before the worm), the injector's trigger."""

from __future__ import annotations

from typing import Any

from mechanisms.spec import StartContext
from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.setup import Setup, lab_ip
from orchestrator.lab.programs import HostPlace, LocalPlace


def worm_state_dir(st: Setup, srv: str, t: TrialSpec) -> str:
    """Where the worm server on `srv` keeps this trial's files (its logs, its scanner's)."""
    return f"{st.hosts.prefix(srv)}/run/worm/{t.id}"


def server_argv(st: Setup, srv: str, t: TrialSpec) -> list[str]:
    s, h = st.exp.spec, st.hosts
    return h.module_argv(srv, "testworm", "server", "--listen", f"{lab_ip(st.lab, srv, st.segment)}:{s.worm.port}",
                         "--key", f"{h.prefix(srv)}/etc/worm.key", "--state-dir", worm_state_dir(st, srv, t),
                         "--lab-ranges", *st.exp_ranges, "--allow", s.worm.scan, "--max-generations", "0")


def mechanism_context(st: Setup, t: TrialSpec, events: str | None) -> StartContext:
    m = st.mech
    assert m is not None and st.throttle_iface is not None
    return StartContext(placement=m.placement, interface=st.throttle_iface, events=events, protocols=(t.protocol,),
                        fail_closed=not m.fail_open)


def mechanism_argv(place: HostPlace | LocalPlace, st: Setup, t: TrialSpec, events: str | None) -> list[str]:
    """The trial's mechanism started through its registry descriptor, as a module of ours at its place."""
    m = st.mech
    assert m is not None and m.descriptor is not None
    argv = m.descriptor.start_argv(m.params, mechanism_context(st, t, events))
    assert argv is not None and argv[1] == "-m", argv      # descriptors start a module of ours: `python -m …`
    return place.module_argv(argv[2], *argv[3:])


def mechanism_stop_argv(place: HostPlace | LocalPlace, st: Setup, t: TrialSpec) -> list[str] | None:
    """What removes the mechanism's rules (after a daemon's death, or per trial for one without a daemon)."""
    m = st.mech
    assert m is not None and m.descriptor is not None
    argv = m.descriptor.stop_argv(mechanism_context(st, t, None))
    return None if argv is None else place.module_argv(argv[2], *argv[3:])


def custom_values(st: Setup, t: TrialSpec, run_dir: str) -> dict[str, str]:
    """The placeholders of a user's mechanism, for this trial (orchestrator.experiment.mechspec.PLACEHOLDERS)."""
    m, place = st.mech, st.throttle
    assert m is not None and place is not None and st.throttle_iface is not None
    return {"iface": st.throttle_iface, "protocol": t.protocol, "run": run_dir, "host": place.label,
            "placement": m.placement, "rate": f"{t.rate:g}", "trial": t.id}


def mark_argv(place: HostPlace | LocalPlace) -> list[str]:
    """Ask the throttle daemon to log a `state` line (what it holds now) just before the worm is triggered."""
    return place.module_argv("throttle", "mark", "--why", "worm")


def trial_seed(spec: Any, t: TrialSpec) -> int:
    """The seed the injector gives the worm in trial t: each trial its own scan order, a rerun the same."""
    return int(spec.seed) + t.index


def trigger_argv(st: Setup, t: TrialSpec) -> list[str]:
    """The injector's trigger of the worm on the infected host, at the trial's rate and seed."""
    s, h = st.exp.spec, st.hosts
    w = s.worm
    trig = h.module_argv(st.injector, "testworm", "trigger", f"{lab_ip(st.lab, st.infected, st.segment)}:{w.port}",
                         "--key", f"{h.prefix(st.injector)}/etc/worm.key", "--lab-ranges", *st.exp_ranges,
                         "--rate", f"{t.rate:g}", "--protocol", t.protocol, "--port", str(w.port),
                         "--targets", w.scan, "--allow", w.scan, "--strategy", w.strategy,
                         "--seed", str(trial_seed(s, t)), "--max-attempts", str(w.max_attempts),
                         "--lifetime", f"{w.lifetime_s:g}", "--connect-timeout", f"{w.connect_timeout_s:g}",
                         "--max-generations", "0")
    if w.profile:      # the profile chooses the strategy (explicit options override a profile's)
        i = trig.index("--strategy")
        trig[i:i + 2] = ["--profile", w.profile]
    return trig
