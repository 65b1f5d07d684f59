"""`python -m throttle predict|run|status|reset|clear`: thin verbs over the model, the daemon and its control socket.

Exit status: 0 success, 1 a runtime failure (permission, iptables, queue bound, daemon unreachable),
2 invalid arguments. Errors are one line on stderr; an unexpected exception (a bug) too, with exit 1 —
`--debug` (anywhere on the command line) prints its traceback first.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from . import control
from .core import POLICIES, RELEASE_CLOCKS, ConfigError, ThrottleConfig, ThrottleError
from .model import PLACEMENTS, RETRANSMIT_SCHEDULES, TARGET_BEHAVIOURS, predict_constant_rate


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:       # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def _throttle_params(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("throttle parameters")
    g.add_argument("--working-set", "--working-set-size", dest="working_set", type=int, default=5,
                   metavar="N", help="working-set size (default 5)")
    g.add_argument("--period", "--release-period", dest="period", type=_positive_float, default=1.0,
                   metavar="S", help="release period in seconds (default 1.0)")
    g.add_argument("--limit", "--delay-queue-limit", dest="limit", type=int, default=100, metavar="N",
                   help="delay-queue limit; the arrival that would exceed it blocks (default 100)")
    g.add_argument("--policy", default="packets", help=f"{' | '.join(POLICIES)} (default packets)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m throttle", description="The reference virus throttle (worm-testbed).")
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error (a bug)")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    pr = sub.add_parser("predict", help="predicted stopping time for a constant scan rate")
    pr.add_argument("--rate", type=_positive_float, required=True, help="new destinations per second")
    pr.add_argument("--protocol", default="tcp", help="tcp | udp (default tcp)")
    _throttle_params(pr)
    pr.add_argument("--initial-working-set", type=int, default=0, metavar="N",
                    help="destinations already in the working set when the scan starts (default 0)")
    pr.add_argument("--retransmit", default="linux", help=f"{' | '.join(RETRANSMIT_SCHEDULES)} (default linux)")
    pr.add_argument("--placement", default="gateway", help=f"{' | '.join(PLACEMENTS)} (default gateway; "
                    "host: a SYN held in the sender's own OUTPUT hook is not retransmitted)")
    pr.add_argument("--connect-timeout", type=_positive_float, default=3.0, metavar="S",
                    help="the worm's connect timeout (default 3.0)")
    pr.add_argument("--targets", default="answer", help=f"{' | '.join(TARGET_BEHAVIOURS)} (default answer)")
    pr.add_argument("--horizon", type=_positive_float, default=3600.0, metavar="S",
                    help="give up after S simulated seconds (default 3600)")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.add_argument("--curve", action="store_true", help="with --json: include the queue-length curve")

    run = sub.add_parser("run", help="run the NFQUEUE daemon (root)")
    run.add_argument("--mode", required=True, help="host (OUTPUT) | gateway (FORWARD) | wire (FORWARD on a "
                     "bridge port, via bridge netfilter: outside an unmodified host)")
    run.add_argument("--queue-num", type=int, default=0, metavar="N", help="NFQUEUE number (default 0)")
    run.add_argument("--events", metavar="FILE", help="JSON-lines event log (appended; '-' for stdout)")
    run.add_argument("--control", default=control.DEFAULT_CONTROL, metavar="SOCKET",
                     help="control socket: a path, or @name for an abstract socket (default @wtb-throttle)")
    run.add_argument("--protocols", default="tcp,udp", help="comma-separated subset of tcp,udp")
    _throttle_params(run)
    run.add_argument("--release-clock", default="armed", help=f"{' | '.join(RELEASE_CLOCKS)} (default armed)")
    run.add_argument("--initial-working-set", nargs="*", default=[], metavar="IP",
                     help="destinations already contacted (the state a worm meets)")
    run.add_argument("--interface", metavar="IF", help="throttle only traffic leaving (host) or "
                     "arriving on (gateway) this interface")
    run.add_argument("--fail-closed", action="store_true",
                     help="no --queue-bypass: new connections are dropped while no daemon listens")

    st = sub.add_parser("status", help="state of the running daemon")
    st.add_argument("--control", default=control.DEFAULT_CONTROL, metavar="SOCKET")
    st.add_argument("--json", action="store_true")

    rs = sub.add_parser("reset", help="return every source (or one) to the initial state")
    rs.add_argument("--control", default=control.DEFAULT_CONTROL, metavar="SOCKET")
    rs.add_argument("--src", metavar="IP", help="only this source")

    mk = sub.add_parser("mark", help="write a `state` line to the event log: every source's working set now")
    mk.add_argument("--control", default=control.DEFAULT_CONTROL, metavar="SOCKET")
    mk.add_argument("--why", required=True, help="what the moment is, e.g. worm (just before the worm starts)")

    sub.add_parser("clear", help="remove the rules a dead daemon left in this network namespace (root; refused "
                   "while a live daemon owns them)")
    return p


def _clear() -> int:
    from . import rules
    owner = rules.live_owner()
    if owner is not None:
        raise rules.RulesOwnedError(f"a live throttle daemon (pid {owner}) owns the rules in this network "
                                    "namespace; stop it instead")
    print("removed the throttle's stale rules" if rules.remove() else "no throttle rules here")
    return 0


def _config(a: argparse.Namespace, initial: Sequence[str] = (), clock: str = "armed") -> ThrottleConfig:
    return ThrottleConfig(working_set_size=a.working_set, release_period_s=a.period, delay_queue_limit=a.limit,
                          policy=a.policy, initial_working_set=tuple(initial), release_clock=clock)


def _predict(a: argparse.Namespace) -> int:
    pred = predict_constant_rate(a.rate, protocol=a.protocol, config=_config(a),
                                 initial_working_set=a.initial_working_set, retransmit=a.retransmit,
                                 placement=a.placement, connect_timeout_s=a.connect_timeout, targets=a.targets,
                                 horizon_s=a.horizon)
    if a.json:
        print(json.dumps(pred.to_dict(curve=a.curve)))
        return 0
    pm = pred.params
    print(f"rate {a.rate:g}/s {a.protocol}, working set {pm['working_set_size']} "
          f"({pm['initial_working_set']} known at start), period {pm['release_period_s']:g} s, "
          f"limit {pm['delay_queue_limit']}, policy {pm['policy']}, retransmit {a.retransmit}, "
          f"placement {a.placement}")
    if pred.stop_s is None:
        print(f"not blocked within {a.horizon:g} s; {pred.out_before_block} attempts out")
    else:
        print(f"blocked after {pred.stop_s:.3f} s; {pred.out_before_block} attempts out before the block "
              f"({pred.packets_out_before_block} packets), {pred.attempts_before_block} attempts made")
    return 0


def _run(a: argparse.Namespace) -> int:
    from .daemon import Daemon, DaemonOptions

    initial = []
    for ip in a.initial_working_set:
        try:
            initial.append(str(ipaddress.IPv4Address(ip)))
        except ValueError:
            raise ConfigError(f"--initial-working-set: not an IPv4 address: {ip!r}") from None
    cfg = _config(a, initial, a.release_clock)
    protocols = tuple(p.strip() for p in a.protocols.split(",") if p.strip())
    opts = DaemonOptions(mode=a.mode, queue_num=a.queue_num, events=a.events, control=a.control,
                         protocols=protocols, interface=a.interface, fail_closed=a.fail_closed)
    return Daemon(cfg, opts).run()


def _fmt_status(st: dict[str, Any]) -> str:
    lines = [f"throttle pid {st['pid']} mode {st['mode']} queue {st['queue_num']} ({st['hook']}), "
             f"policy {st['config']['policy']}, up {st['uptime_s']:.1f} s",
             "counts: " + ", ".join(f"{k} {v}" for k, v in st["counts"].items())]
    for src, s in sorted(st["sources"].items()):
        flag = "BLOCKED" if s["blocked"] else "ok"
        lines.append(f"  {src:<16} {flag:<8} queue {s['queue_len']:>4}  working set {' '.join(s['working_set'])}")
    if not st["sources"]:
        lines.append("  (no source seen yet)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    a = build_parser().parse_args([x for x in argv if x != "--debug"])
    try:
        if a.verb == "predict":
            return _predict(a)
        if a.verb == "run":
            return _run(a)
        if a.verb == "status":
            st = control.request(a.control, {"cmd": "status"})["status"]
            print(json.dumps(st) if a.json else _fmt_status(st))
            return 0
        if a.verb == "mark":
            print(json.dumps(control.request(a.control, {"cmd": "mark", "why": a.why})["state"]))
            return 0
        if a.verb == "clear":
            return _clear()
        if a.verb == "reset":
            r = control.request(a.control, {"cmd": "reset", "src": a.src})
            print(f"reset {'every source' if a.src is None else a.src}: {r['dropped']} queued packet(s) dropped")
            return 0
    except ConfigError as exc:
        print(f"throttle {a.verb}: error: {exc}", file=sys.stderr)
        return 2
    except ThrottleError as exc:
        print(f"throttle {a.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:        # a bug: still one line
        if debug:
            traceback.print_exc()
        print(f"throttle {a.verb}: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} (a bug; "
              "--debug shows the traceback)", file=sys.stderr)
        return 1
    return 2
