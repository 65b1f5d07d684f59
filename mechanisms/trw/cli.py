"""`python -m mechanisms.trw predict|replay|run|status|reset|clear`.

Exit status: 0 success, 1 a runtime failure (permission, iptables, queue bound, daemon unreachable),
2 invalid arguments; errors are one line on stderr (`--debug` adds the traceback of a bug).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from throttle import control
from throttle.core import ThrottleError

from .core import ConfigError, TrwConfig, TrwError
from .daemon import DEFAULT_CONTROL
from .model import predict_constant_rate, replay_worm_log


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _num(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def _params(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TRW parameters")
    g.add_argument("--theta0", type=_num, default=0.8, help="P(first contact succeeds | benign) (default 0.8)")
    g.add_argument("--theta1", type=_num, default=0.2, help="P(first contact succeeds | scanner) (default 0.2)")
    g.add_argument("--alpha", type=_num, default=0.01, help="false-positive target (default 0.01)")
    g.add_argument("--beta", type=_num, default=0.99, help="detection target (default 0.99)")
    g.add_argument("--timeout", type=_num, default=3.0, metavar="S",
                   help="an unanswered first contact fails after S seconds (default 3)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mechanisms.trw", description="Threshold Random Walk (worm-testbed).")
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    pr = sub.add_parser("predict", help="a constant-rate worm whose every first contact gets one answer")
    pr.add_argument("--rate", type=_num, required=True)
    pr.add_argument("--answer", default="reset", help="reset | unreachable | established | timeout")
    pr.add_argument("--rtt", type=_num, default=0.0, metavar="S")
    pr.add_argument("--json", action="store_true")
    _params(pr)
    rp = sub.add_parser("replay", help="a worm's attempt log through the test (the model)")
    rp.add_argument("worm_log")
    rp.add_argument("--json", action="store_true")
    _params(rp)
    run = sub.add_parser("run", help="run the NFQUEUE daemon (root)")
    run.add_argument("--mode", required=True, help="host | gateway")
    run.add_argument("--queue-num", type=int, default=0, metavar="N")
    run.add_argument("--events", metavar="FILE", help="JSON-lines event log (appended; '-' for stdout)")
    run.add_argument("--control", default=DEFAULT_CONTROL, metavar="SOCKET")
    run.add_argument("--interface", metavar="IF", help="host mode: only this interface")
    run.add_argument("--fail-closed", action="store_true",
                     help="no --queue-bypass on the SYN rule: new connections drop while no daemon listens")
    _params(run)
    st = sub.add_parser("status")
    st.add_argument("--control", default=DEFAULT_CONTROL, metavar="SOCKET")
    st.add_argument("--json", action="store_true")
    rs = sub.add_parser("reset")
    rs.add_argument("--control", default=DEFAULT_CONTROL, metavar="SOCKET")
    rs.add_argument("--src", metavar="IP")
    sub.add_parser("clear", help="remove the rules a dead daemon left here (root)")
    return p


def _config(a: argparse.Namespace) -> TrwConfig:
    return TrwConfig(theta0=a.theta0, theta1=a.theta1, alpha=a.alpha, beta=a.beta, timeout_s=a.timeout)


def _clear() -> int:
    from throttle import rules as iptables

    from .rules import TAG
    owner = iptables.live_owner(tag=TAG)
    if owner is not None:
        raise iptables.RulesOwnedError(f"a live TRW daemon (pid {owner}) owns the rules in this network "
                                       "namespace; stop it instead")
    print("removed TRW's stale rules" if iptables.remove(TAG) else "no TRW rules here")
    return 0


def _dispatch(a: argparse.Namespace) -> int:
    if a.verb == "predict":
        pred = predict_constant_rate(a.rate, answer=a.answer, rtt_s=a.rtt, config=_config(a))
        if a.json:
            print(json.dumps(pred.__dict__))
        elif pred.stop_s is None or pred.block_attempt is None:
            print(f"rate {a.rate:g}/s, every first contact {a.answer}: never blocked")
        else:
            print(f"rate {a.rate:g}/s, every first contact {a.answer}: blocked {pred.stop_s:.3f} s after the "
                  f"first attempt, by the outcome of attempt {pred.block_attempt + 1}; "
                  f"{pred.out_before_block} attempts out")
        return 0
    if a.verb == "replay":
        try:
            with open(a.worm_log, encoding="utf-8") as fh:
                rep = replay_worm_log(fh, _config(a))
        except OSError as exc:
            raise TrwError(f"cannot read {a.worm_log}: {exc.strerror}") from None
        out = {src: sp.to_dict() for src, sp in rep.sources.items()}
        if a.json:
            print(json.dumps(out))
        for src, d in sorted(out.items()) if not a.json else ():
            if d["blocked_at"] is None:
                print(f"{src}: not blocked; {d['out_before_block']} of {d['attempts']} attempts out")
            else:
                print(f"{src}: blocked {d['stop_s']:.3f} s after its first attempt, by the outcome of attempt "
                      f"{d['block_attempt'] + 1}; {d['out_before_block']} attempts out")
        return 0
    if a.verb == "run":
        from .daemon import DaemonOptions, TrwDaemon
        cfg = _config(a)
        return TrwDaemon(cfg, DaemonOptions(mode=a.mode, queue_num=a.queue_num, events=a.events,
                                            control=a.control, interface=a.interface,
                                            fail_closed=a.fail_closed)).run()
    if a.verb == "status":
        st = control.request(a.control, {"cmd": "status"}, what="TRW daemon")["status"]
        if a.json:
            print(json.dumps(st))
        else:
            print(f"trw pid {st['pid']} mode {st['mode']} queue {st['queue_num']}, up {st['uptime_s']:.1f} s")
            for src, s in sorted(st["sources"].items()):
                print(f"  {src:<16} {'BLOCKED' if s['blocked'] else 'ok':<8} ln Λ {s['llr']:+.3f}  "
                      f"failures {s['failures']} successes {s['successes']} pending {s['pending']}")
        return 0
    if a.verb == "reset":
        control.request(a.control, {"cmd": "reset", "src": a.src}, what="TRW daemon")
        print(f"reset {'every source' if a.src is None else a.src}")
        return 0
    if a.verb == "clear":
        return _clear()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    a = build_parser().parse_args([x for x in argv if x != "--debug"])
    try:
        return _dispatch(a)
    except ConfigError as exc:
        print(f"trw {a.verb}: error: {exc}", file=sys.stderr)
        return 2
    except (TrwError, ThrottleError) as exc:
        print(f"trw {a.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"trw {a.verb}: internal error: {type(exc).__name__}: {exc} (a bug; --debug shows the traceback)",
              file=sys.stderr)
        return 1
