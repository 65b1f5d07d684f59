"""`python -m testworm server|scan|trigger|kill|revive|status|keygen`: thin verbs over the modules.

Every user mistake and every interlock refusal is one line on stderr and exit code 2; a refused or failed
command at run time is exit code 1. An unexpected exception (a bug) is one line too, with exit code 1;
`--debug` (anywhere on the command line) prints its traceback first.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from . import params as P
from .addrs import AddressSet, ip_int
from .errors import InterlockError, ProtocolError, UsageError, WormError
from .interlocks import OVERRIDE_FLAG, check_environment, check_lab_ranges
from .protocol import DEFAULT_WINDOW_S, load_key, write_key
from .strategies import STRATEGIES

MAX_HIT_LIST_BYTES = 1 << 20      # 1024 addresses (the most a hit list may hold) with comments fit many times


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _scan_options(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("scan parameters (explicit values override a --profile)")
    g.add_argument("--rate", help="attempts per second (> 0, at most 100000)")
    g.add_argument("--protocol", help="tcp (connect scan, default) or udp (one datagram per target)")
    g.add_argument("--port", help="destination port")
    g.add_argument("--targets", nargs="+", metavar="CIDR", help="what to scan (default: the allow-list)")
    g.add_argument("--allow", nargs="+", metavar="CIDR", help="the allow-list; every target is checked against it")
    g.add_argument("--lab-ranges", nargs="+", metavar="CIDR",
                   help=f"the lab's experimental networks (default {P.DEFAULT_LAB_RANGES[0]})")
    g.add_argument("--strategy", help=f"one of {', '.join(STRATEGIES)} (default sequential)")
    g.add_argument("--profile", help="nimda-like, codered2-like, blaster-like or slammer-like")
    g.add_argument("--seed", help="seed of every random choice (default 0)")
    g.add_argument("--start", help="sequential start: an address, first, self, random or blaster")
    g.add_argument("--hit-list", nargs="+", metavar="ADDR", help="addresses (or @FILE) for strategy hit-list")
    g.add_argument("--local-weights", metavar="W16,W8,WALL", help="local-preference weights (default 0.5,0.25,0.25)")
    g.add_argument("--burst", help="attempts due together (Blaster's batches; default 1)")
    g.add_argument("--max-attempts", help="bound on attempts (default 100000)")
    g.add_argument("--lifetime", dest="lifetime_s", help="bound on the scan's life in seconds (default 300)")
    g.add_argument("--connect-timeout", dest="connect_timeout_s", help="TCP connect timeout, s (default 3)")
    g.add_argument("--max-in-flight", help="bound on TCP attempts in flight (default 256)")
    g.add_argument("--udp-size", help="UDP payload bytes (default 32)")
    g.add_argument("--generation", help="generation of this scanner (default 0)")
    g.add_argument("--max-generations", help="hop bound (default 3, at most 64)")


def _override(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(OVERRIDE_FLAG, dest="override", action="store_true",
                    help="FOR TESTS ONLY: skip the root-namespace and uplink-route checks (never the allow-list)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m testworm", description="The benign test worm (worm-testbed).")
    ap.add_argument("--version", action="version", version=__version__)
    ap.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error (a bug)")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("scan", help="scan in the foreground")
    _scan_options(s)
    s.add_argument("--log", required=True, help="JSON-lines event log (- for stdout)")
    s.add_argument("--key", help="lab key file: trigger test-worm servers found (generation + 1)")
    s.add_argument("--source", help="this host's address (default: the kernel's route choice)")
    _override(s)

    v = sub.add_parser("server", help="run the test-worm server")
    v.add_argument("--listen", required=True, metavar="ADDR:PORT")
    v.add_argument("--key", required=True, help="lab key file")
    v.add_argument("--state-dir", required=True, help="where the server and its scanners log")
    v.add_argument("--allow", nargs="+", metavar="CIDR", help="widest allow-list a trigger may use (default: lab ranges)")
    v.add_argument("--lab-ranges", nargs="+", metavar="CIDR")
    v.add_argument("--max-generations", default="3", help="hop bound for triggers (default 3, at most 64)")
    v.add_argument("--replay-window", default=str(DEFAULT_WINDOW_S), help="trigger timestamp window, s (default 60)")
    _override(v)

    t = sub.add_parser("trigger", help="start the scanner on test-worm servers (what the injector runs)")
    t.add_argument("hosts", nargs="+", metavar="ADDR:PORT")
    t.add_argument("--key", required=True)
    t.add_argument("--timeout", default="5", help="seconds to wait for each server")
    _scan_options(t)
    _override(t)

    for name, what in (("kill", "stop scanning and refuse triggers until revived"),
                       ("revive", "accept triggers again after a kill or a finished scan"),
                       ("status", "report state, generation and counters")):
        c = sub.add_parser(name, help=what)
        c.add_argument("hosts", nargs="+", metavar="ADDR:PORT")
        c.add_argument("--key", required=True)
        c.add_argument("--timeout", default="5")
        c.add_argument("--lab-ranges", nargs="+", metavar="CIDR")
        _override(c)

    k = sub.add_parser("keygen", help="write a new lab key file (mode 0600; never overwrites)")
    k.add_argument("path")
    return ap


def _hit_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return values
    out: list[str] = []
    for v in values:
        if v.startswith("@"):
            text = _read_hit_list(v[1:])
            out += [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]
        else:
            out.append(v)
    return out


def _read_hit_list(path: str) -> str:
    """A hit-list file, bounded: a regular file of at most MAX_HIT_LIST_BYTES of UTF-8 text."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)     # a FIFO must not hang the worm
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read hit list {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"hit list {path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_HIT_LIST_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_HIT_LIST_BYTES:
        raise UsageError(f"hit list {path} is larger than {MAX_HIT_LIST_BYTES:,} bytes (1024 addresses at most)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"hit list {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start:,})") from None


def _raw_params(a: argparse.Namespace) -> dict[str, Any]:
    raw = {k: getattr(a, k, None) for k in P.KEYS}
    raw["hit_list"] = _hit_list(raw["hit_list"])
    return raw


def _lab(a: argparse.Namespace) -> AddressSet:
    lab = AddressSet.from_cidrs(a.lab_ranges or list(P.DEFAULT_LAB_RANGES), "--lab-ranges")
    check_lab_ranges(lab)
    return lab


def cmd_scan(a: argparse.Namespace) -> int:
    from .scanner import run_scan
    p = P.resolve(_raw_params(a))
    key = load_key(a.key) if a.key else None
    if a.source is not None:
        ip_int(a.source)
    reason, n = run_scan(p, a.log, key=key, source=a.source, override=a.override)
    print(f"testworm scan: stopped ({reason}) after {n} attempts; log {a.log}", file=sys.stderr)
    return 0


def cmd_server(a: argparse.Namespace) -> int:
    from .client import parse_hostport
    from .server import Server
    host, port = parse_hostport(a.listen)
    key = load_key(a.key)
    lab = _lab(a)
    allow = AddressSet.from_cidrs(a.allow, "--allow") if a.allow is not None else lab
    mg = P.number({"max_generations": a.max_generations}, "max_generations", 0, P.MAX_GENERATIONS, integer=True)
    window = P.number({"replay_window": a.replay_window}, "replay_window", 0.0, 3600.0, lo_open=True)
    Server(host, port, key=key, key_path=a.key, state_dir=a.state_dir, allow=allow, lab=lab,
           max_generations=mg, window_s=window, override=a.override).serve()
    return 0


def _client(a: argparse.Namespace, cmd: str, params: dict[str, Any] | None = None, generation: int = 0) -> int:
    from .client import parse_hostport, send
    lab = _lab(a)
    hosts = [parse_hostport(h) for h in a.hosts]
    for host, _ in hosts:
        if ip_int(host) not in lab:
            raise InterlockError(f"{host} is outside the lab ranges {', '.join(lab.cidrs())}")
    key = load_key(a.key)
    timeout = P.number({"timeout": a.timeout}, "timeout", 0.0, 60.0, lo_open=True)
    check_environment(lab, override=a.override)
    code = 0
    for host, port in hosts:
        try:
            body = send(host, port, key, cmd, generation=generation, params=params, timeout=timeout)
        except (OSError, ProtocolError) as exc:
            body = {"ok": False, "error": str(exc) or type(exc).__name__}
        code = code or (0 if body.get("ok") is True else 1)
        print(json.dumps({"host": f"{host}:{port}", **body}), flush=True)
    return code


def cmd_trigger(a: argparse.Namespace) -> int:
    raw = _raw_params(a)
    given = {k: v for k, v in raw.items() if v is not None and k not in ("generation", "lab_ranges")}
    # Validate locally what can be validated without the server's own settings (exit 2 on bad input).
    probe = {**raw, "port": raw["port"] or "1", "allow": raw["allow"] or raw["lab_ranges"]
             or list(P.DEFAULT_LAB_RANGES)}
    p = P.resolve(probe)
    typed = p.to_dict()  # send the validated values (numbers as numbers), only for the options given
    return _client(a, "trigger", {k: typed[k] for k in given}, p.generation)


def cmd_keygen(a: argparse.Namespace) -> int:
    try:
        write_key(a.path)
    except OSError as exc:
        raise UsageError(f"cannot write key file {a.path}: {exc.strerror}") from None
    print(a.path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [x for x in argv if x != "--debug"]
    try:
        a = build_parser().parse_args(argv)
        if a.cmd == "scan":
            return cmd_scan(a)
        if a.cmd == "server":
            return cmd_server(a)
        if a.cmd == "trigger":
            return cmd_trigger(a)
        if a.cmd == "keygen":
            return cmd_keygen(a)
        return _client(a, a.cmd)
    except WormError as exc:
        print(f"testworm: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: still one line, the traceback only with --debug
        if debug:
            traceback.print_exc()
        print(f"testworm: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} (a bug; --debug "
              "shows the traceback)", file=sys.stderr)
        return 1

