"""The command lines a trial runs on its hosts, built from the experiment and the lab alone (pure: no I/O):
the worm server on every vulnerable host, the throttle daemon at its placement (and its `mark` just before the
worm), the injector's trigger."""

from __future__ import annotations

from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.setup import Setup, lab_ip
from orchestrator.experiment.spec import ThrottleSpec
from orchestrator.lab.programs import HostPlace, LocalPlace


def worm_state_dir(st: Setup, srv: str, t: TrialSpec) -> str:
    """Where the worm server on `srv` keeps this trial's files (its logs, its scanner's)."""
    return f"{st.hosts.prefix(srv)}/run/worm/{t.id}"


def server_argv(st: Setup, srv: str, t: TrialSpec) -> list[str]:
    s, h = st.exp.spec, st.hosts
    return h.module_argv(srv, "testworm", "server", "--listen", f"{lab_ip(st.lab, srv, st.segment)}:{s.worm.port}",
                         "--key", f"{h.prefix(srv)}/etc/worm.key", "--state-dir", worm_state_dir(st, srv, t),
                         "--lab-ranges", *st.exp_ranges, "--allow", s.worm.scan, "--max-generations", "0")


def throttle_argv(place: HostPlace | LocalPlace, th: ThrottleSpec, st: Setup, t: TrialSpec, events: str) -> list[str]:
    assert st.throttle_iface is not None
    return place.module_argv("throttle", "run", "--mode", th.placement, "--interface", st.throttle_iface,
                             "--events", events, "--working-set", str(th.working_set_size),
                             "--period", str(th.release_period_s), "--limit", str(th.delay_queue_limit),
                             "--policy", th.policy, "--protocols", t.protocol,
                             *([] if th.fail_open else ["--fail-closed"]))


def mark_argv(place: HostPlace | LocalPlace) -> list[str]:
    """Ask the throttle daemon to log a `state` line (what it holds now) just before the worm is triggered."""
    return place.module_argv("throttle", "mark", "--why", "worm")


def trigger_argv(st: Setup, t: TrialSpec) -> list[str]:
    """The injector's trigger of the worm on the infected host, at the trial's rate and seed."""
    s, h = st.exp.spec, st.hosts
    w = s.worm
    trig = h.module_argv(st.injector, "testworm", "trigger", f"{lab_ip(st.lab, st.infected, st.segment)}:{w.port}",
                         "--key", f"{h.prefix(st.injector)}/etc/worm.key", "--lab-ranges", *st.exp_ranges,
                         "--rate", f"{t.rate:g}", "--protocol", t.protocol, "--port", str(w.port),
                         "--targets", w.scan, "--allow", w.scan, "--strategy", w.strategy,
                         "--seed", str(s.seed + t.index), "--max-attempts", str(w.max_attempts),
                         "--lifetime", f"{w.lifetime_s:g}", "--connect-timeout", f"{w.connect_timeout_s:g}",
                         "--max-generations", "0")
    if w.profile:      # the profile chooses the strategy (explicit options override a profile's)
        i = trig.index("--strategy")
        trig[i:i + 2] = ["--profile", w.profile]
    return trig
