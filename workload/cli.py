"""`python -m workload serve|run|schedule|analyse`: thin verbs over the modules.

Bad input and interlock refusals are one line on stderr starting `workload: ` and exit code 2 (never a
traceback); a failure at run time is exit 1; an unexpected exception (a bug) is one line and exit 1, with its
traceback under `--debug`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from testworm.addrs import AddressSet
from testworm.client import parse_hostport
from testworm.errors import UsageError, WormError
from testworm.interlocks import OVERRIDE_FLAG, check_lab_ranges
from testworm.params import DEFAULT_LAB_RANGES

from . import __version__, params, trace
from .schedule import ARRIVALS, POPULARITIES, Conn, generate, summary, to_csv, to_jsonl

DESCRIPTION = """The benign traffic generator of worm-testbed: what a containment mechanism costs legitimate users.

  serve     answer HTTP-like TCP and DNS-like UDP requests on lab addresses, logging each request
  schedule  print the schedule a session would follow (pure: no sockets), as a trace CSV, JSON lines or a summary
  run       open the schedule's connections on time and log each one (scheduled, sent, established, answered,
            outcome), under the test worm's interlocks: --allow is required, only lab ranges (198.18.0.0/15),
            never the machine's root network namespace
  analyse   per-connection delays from a run's log, joined with a capture's SYNs; p50/p95/p99/max, drops

A session is generated (--servers, --rate, --duration, --burst, --popularity, --seed …; the same seed gives
the same schedule) or replayed from a trace (--trace FILE: a CSV time,destination,protocol,port or a pcap).
Exit codes: 0 success; 1 failure at run time; 2 bad input or an interlock refusal. See docs/workload.md."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _session_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--servers", nargs="+", metavar="ADDR", required=True,
                    help="server addresses, most popular first (destination index 0, 1, …)")
    g = ap.add_argument_group("a generated session")
    g.add_argument("--rate", help="mean new connections per second (> 0, at most 10000)")
    g.add_argument("--duration", help="seconds over which connections are scheduled (at most 3600)")
    g.add_argument("--burst", default="1", help="connections a page opens at once (default 1; pages arrive at "
                                                "rate/burst per second)")
    g.add_argument("--popularity", default="zipf", help=f"{' or '.join(POPULARITIES)} over the servers (default zipf)")
    g.add_argument("--zipf-s", default="1", help="Zipf exponent: server k has weight 1/k^s (default 1)")
    g.add_argument("--arrivals", default="poisson", help=f"{' or '.join(ARRIVALS)} page arrivals (default poisson)")
    g.add_argument("--udp-fraction", default="0", help="share of connections that are DNS-like UDP (default 0)")
    g.add_argument("--seed", default="0", help="seed of every random choice (default 0)")
    g.add_argument("--tcp-port", default="8080", help="servers' TCP port (default 8080)")
    g.add_argument("--udp-port", default="5353", help="servers' UDP port (default 5353)")
    g.add_argument("--miss", default="0", help="share of connections sent to a --stale address instead, where no "
                                               "server runs (default 0)")
    g.add_argument("--stale", nargs="+", default=[], metavar="ADDR",
                   help="addresses without a server (lab addresses) that the --miss share goes to")
    g.add_argument("--max-connections", default=str(params.MAX_CONNECTIONS), help="bound on the schedule's length")
    t = ap.add_argument_group("a replayed trace (instead of --rate/--duration)")
    t.add_argument("--trace", metavar="FILE", help="CSV (time,destination,protocol,port) or pcap/pcapng")
    t.add_argument("--trace-format", default="auto", help="auto (default), csv or pcap")
    t.add_argument("--trace-source", metavar="ADDR", help="pcap: replay the connections this address started")
    t.add_argument("--trace-ports", default="keep", help="keep the trace's ports (default) or use the lab's")
    t.add_argument("--wrap", action="store_true", help="map destination k to server k mod n when the trace has "
                                                       "more destinations than servers")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m workload", description=DESCRIPTION,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=__version__)
    ap.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error (a bug)")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    v = sub.add_parser("serve", help="run the servers", description="Answer HTTP-like TCP (GET → 200 and "
                       "--answer-bytes bytes) and DNS-like UDP requests (WLQ1 → WLA1) on lab addresses; log "
                       "each request (JSON lines).")
    v.add_argument("--tcp", nargs="+", default=[], metavar="ADDR:PORT", help="TCP addresses to listen on")
    v.add_argument("--udp", nargs="+", default=[], metavar="ADDR:PORT", help="UDP addresses to answer on")
    v.add_argument("--log", required=True, help="JSON-lines request log (- for stdout)")
    v.add_argument("--lab-ranges", nargs="+", metavar="CIDR", help=f"default {DEFAULT_LAB_RANGES[0]}")
    v.add_argument("--answer-bytes", default="512", help="answer size in bytes (default 512)")
    v.add_argument("--max-clients", default="512", help="TCP connections at once (default 512)")
    v.add_argument("--lifetime", default="3600", help="seconds before the servers stop (default 3600)")
    _override(v)

    s = sub.add_parser("schedule", help="print a session's schedule (no sockets)",
                       description="Print the schedule `run` would follow with the same options: a trace CSV "
                       "(replayable with --trace), JSON lines, or a JSON summary with its fingerprint.")
    _session_options(s)
    s.add_argument("--format", default="csv", help="csv (default), jsonl or summary")
    s.add_argument("--working-set", default="5", help="summary: count new destinations against an LRU list of "
                   "this many servers, as a Williamson throttle's working set (default 5)")

    r = sub.add_parser("run", help="run a session", description="Open the schedule's connections on time "
                       "and log each one. Refuses targets outside --allow, an allow-list outside the lab "
                       "ranges, and the machine's root network namespace.")
    _session_options(r)
    r.add_argument("--allow", nargs="+", metavar="CIDR", help="the allow-list (required); every server must be in it")
    r.add_argument("--lab-ranges", nargs="+", metavar="CIDR", help=f"default {DEFAULT_LAB_RANGES[0]}")
    r.add_argument("--log", required=True, help="JSON-lines connection log (- for stdout)")
    r.add_argument("--timeout", default="10", help="seconds to connect and be answered (default 10)")
    r.add_argument("--max-in-flight", default="256", help="connections open at once (default 256)")
    r.add_argument("--lifetime", help="bound on the session in seconds (default: schedule + timeout + 1)")
    _override(r)

    a = sub.add_parser("analyse", help="delays from a run's log and a capture",
                       description="Per-connection delay from the schedule (to the first SYN on the wire, to "
                       "established, to the answer) and their p50/p95/p99/max; dropped and refused counts.")
    a.add_argument("--log", required=True, help="the run's connection log")
    a.add_argument("--capture", help="pcap/pcapng with the session's SYNs (wall-clock timestamps)")
    a.add_argument("--rows", metavar="CSV", help="also write one row per connection here")
    a.add_argument("--slack", default="1", help="seconds a packet may precede its scheduled time (default 1)")
    return ap


def _override(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(OVERRIDE_FLAG, dest="override", action="store_true",
                    help="FOR TESTS ONLY: skip the root-namespace and uplink-route checks (never the allow-list)")


def _schedule(a: argparse.Namespace) -> tuple[list[Conn], dict]:
    servers = params.servers(a.servers)
    tcp_port, udp_port = params.port(a.tcp_port, "--tcp-port"), params.port(a.udp_port, "--udp-port")
    cap = params.num(a.max_connections, "--max-connections", 1, params.MAX_CONNECTIONS, integer=True)
    if a.trace:
        if a.rate is not None or a.duration is not None:
            raise UsageError("--trace replays a trace: --rate and --duration do not apply")
        if a.stale or a.miss != "0":
            raise UsageError("--trace replays a trace: --miss and --stale do not apply")
        conns = trace.load(a.trace, servers, fmt=params.choice(a.trace_format, "--trace-format", trace.FORMATS),
                           wrap=a.wrap, ports=params.choice(a.trace_ports, "--trace-ports", trace.PORT_MODES),
                           tcp_port=tcp_port, udp_port=udp_port, source=a.trace_source)[:cap]
        info = {"trace": a.trace, "trace_source": a.trace_source, "wrap": a.wrap, "trace_ports": a.trace_ports}
        return conns, {"servers": list(servers), **info}
    spec = params.gen_spec(servers=servers, rate=a.rate, duration=a.duration, burst=a.burst,
                           popularity=a.popularity, zipf_s=a.zipf_s, arrivals=a.arrivals,
                           udp_fraction=a.udp_fraction, tcp_port=a.tcp_port, udp_port=a.udp_port, seed=a.seed,
                           max_connections=a.max_connections, stale=a.stale, miss=a.miss)
    info = {k: v for k, v in spec.__dict__.items() if k not in ("servers", "stale")}
    if spec.stale:
        info["stale"] = list(spec.stale)
    return generate(spec), {"servers": list(servers), **info}


def cmd_schedule(a: argparse.Namespace) -> int:
    fmt = params.choice(a.format, "--format", ("csv", "jsonl", "summary"))
    conns, info = _schedule(a)
    if fmt == "csv":
        sys.stdout.write(to_csv(conns))
    elif fmt == "jsonl":
        sys.stdout.write(to_jsonl(conns))
    else:
        from .schedule import fingerprint
        ws = params.num(a.working_set, "--working-set", 1, params.MAX_SERVERS, integer=True)
        print(json.dumps({**summary(conns, info.get("duration_s"), ws), "fingerprint": fingerprint(conns),
                          "params": info}))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from .client import run_session
    scope = params.scope(a.allow, a.lab_ranges)
    conns, info = _schedule(a)
    scope.check_servers([*info["servers"], *info.get("stale", [])])
    timeout = params.num(a.timeout, "--timeout", 0, params.MAX_TIMEOUT_S, lo_open=True)
    mif = params.num(a.max_in_flight, "--max-in-flight", 1, params.MAX_IN_FLIGHT, integer=True)
    life = None if a.lifetime is None else params.num(a.lifetime, "--lifetime", 0, params.MAX_DURATION_S + 60,
                                                      lo_open=True)
    reason, outcomes = run_session(conns, scope, a.log, timeout_s=timeout, max_in_flight=mif, lifetime_s=life,
                                   params=info, override=a.override)
    shown = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "none"
    print(f"workload run: stopped ({reason}) after {sum(outcomes.values())} of {len(conns)} connections "
          f"({shown}); log {a.log}", file=sys.stderr)
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from .server import Server
    if not a.tcp and not a.udp:
        raise UsageError("serve: give --tcp ADDR:PORT and/or --udp ADDR:PORT")
    lab = AddressSet.from_cidrs(list(a.lab_ranges or DEFAULT_LAB_RANGES), "--lab-ranges")
    check_lab_ranges(lab)
    srv = Server([parse_hostport(x) for x in a.tcp], [parse_hostport(x) for x in a.udp], log=a.log, lab=lab,
                 answer_bytes=params.num(a.answer_bytes, "--answer-bytes", 0, params.MAX_ANSWER_BYTES, integer=True),
                 max_clients=params.num(a.max_clients, "--max-clients", 1, params.MAX_IN_FLIGHT, integer=True),
                 lifetime_s=params.num(a.lifetime, "--lifetime", 0, 86400, lo_open=True), override=a.override)
    reason = srv.serve()
    print(f"workload serve: stopped ({reason}); log {a.log}", file=sys.stderr)
    return 0


def cmd_analyse(a: argparse.Namespace) -> int:
    from .analysis import analyse
    slack = params.num(a.slack, "--slack", 0, 60)
    try:
        rows, summ = analyse(a.log, a.capture, slack)
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if a.rows:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["i"])
        w.writeheader()
        w.writerows(rows)
        try:
            with open(a.rows, "w", encoding="utf-8") as fh:
                fh.write(buf.getvalue())
        except OSError as exc:
            raise UsageError(f"cannot write {a.rows}: {exc.strerror}") from None
    print(json.dumps(summ, indent=1))
    return 0


COMMANDS = {"serve": cmd_serve, "schedule": cmd_schedule, "run": cmd_run, "analyse": cmd_analyse}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [x for x in argv if x != "--debug"]
    try:
        a = build_parser().parse_args(argv)
        return COMMANDS[a.cmd](a)
    except WormError as exc:
        print(f"workload: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: still one line, the traceback only with --debug
        if debug:
            traceback.print_exc()
        print(f"workload: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} (a bug; --debug "
              "shows the traceback)", file=sys.stderr)
        return 1
