"""`python -m mechanisms.ratelimit render|apply|clear|status|predict`.

Exit status: 0 success, 1 a runtime failure (nft missing or refusing, not root), 2 invalid arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from .model import predict_constant_rate, predict_worm_log
from .rules import ConfigError, RateLimitConfig, RateLimitError, apply, clear, counters, render


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _num(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def _params(p: argparse.ArgumentParser, placement: bool = True) -> None:
    p.add_argument("--new-per-s", type=_num, default=2.0, help="new connections per source per second (default 2)")
    p.add_argument("--burst", type=int, default=5, help="bucket size (default 5)")
    if placement:
        p.add_argument("--placement", default="host", help="host (output) | gateway (forward)")
        p.add_argument("--protocols", default="tcp,udp", help="comma-separated subset of tcp,udp")
        p.add_argument("--interface", metavar="IF", help="only traffic leaving (host) / arriving on (gateway) IF")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mechanisms.ratelimit", description="New connections per source, in the kernel.")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    _params(sub.add_parser("render", help="print the nft script"))
    _params(sub.add_parser("apply", help="install it (root; replaces an earlier one)"))
    sub.add_parser("clear", help="remove it (root)")
    sub.add_parser("status", help="is it installed; its drop counter")
    pr = sub.add_parser("predict", help="what the token bucket lets out of a worm")
    _params(pr, placement=False)
    pr.add_argument("--rate", type=_num, help="a constant-rate worm: attempts per second")
    pr.add_argument("--duration", type=_num, default=10.0, metavar="S")
    pr.add_argument("--protocol", default="tcp")
    pr.add_argument("--worm-log", metavar="FILE", help="instead: the worm's own log")
    pr.add_argument("--json", action="store_true")
    return p


def _config(a: argparse.Namespace) -> RateLimitConfig:
    return RateLimitConfig(new_per_s=a.new_per_s, burst=a.burst, placement=a.placement,
                           protocols=tuple(x.strip() for x in a.protocols.split(",") if x.strip()),
                           interface=a.interface)


def _dispatch(a: argparse.Namespace) -> int:
    if a.verb == "render":
        print(render(_config(a)), end="")
    elif a.verb == "apply":
        c = _config(a)
        apply(c)
        print(f"rate limiter installed: {c.nft_rate()} new connections per source, burst {c.burst}, {c.placement}")
    elif a.verb == "clear":
        clear()
        print("rate limiter removed")
    elif a.verb == "status":
        cnt = counters()
        print(json.dumps({"installed": cnt is not None, **(cnt or {})}))
    elif a.verb == "predict":
        RateLimitConfig(new_per_s=a.new_per_s, burst=a.burst)             # the same checks as apply
        if (a.rate is None) == (a.worm_log is None):
            raise ConfigError("give one of --rate or --worm-log")
        if a.protocol not in ("tcp", "udp"):
            raise ConfigError(f"unknown protocol {a.protocol!r}; known: tcp, udp")
        if a.worm_log:
            try:
                with open(a.worm_log, encoding="utf-8") as fh:
                    preds = predict_worm_log(fh, new_per_s=a.new_per_s, burst=a.burst)
            except OSError as exc:
                raise RateLimitError(f"cannot read {a.worm_log}: {exc.strerror}") from None
        else:
            preds = {"worm": predict_constant_rate(a.rate, a.duration, new_per_s=a.new_per_s, burst=a.burst,
                                                   protocol=a.protocol)}
        out = {k: v.to_dict() for k, v in preds.items()}
        if a.json:
            print(json.dumps(out))
        else:
            for k, d in sorted(out.items()):
                wr = "-" if d["wire_rate"] is None else f"{d['wire_rate']:.3f}/s"
                print(f"{k}: {d['out']} of {d['attempts']} attempts out; wire rate after the first second {wr}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return _dispatch(a)
    except ConfigError as exc:
        print(f"ratelimit {a.verb}: error: {exc}", file=sys.stderr)
        return 2
    except RateLimitError as exc:
        print(f"ratelimit {a.verb}: error: {exc}", file=sys.stderr)
        return 1
