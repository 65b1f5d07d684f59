"""Trace replay: a user's own connection trace turned into a schedule on the lab's servers (pure but for
reading the file).

CSV: one connection per line, `time,destination,protocol,port` — seconds from the start (≥ 0, never
decreasing), a destination index (0 = the first server given), `tcp` or `udp`, and a port (empty: the lab's
port for that protocol). A header line whose first field is `time` is allowed; blank lines and `#` comments
are skipped. Every error names the file and the line.

pcap/pcapng: the connection starts (first SYN per TCP connection, first datagram per UDP flow) sent by one
source (`source`, required when the capture holds starts from several), times relative to the first start;
distinct destination addresses are numbered in order of first appearance and mapped onto the servers by that
number. More destinations than servers is an error unless `wrap` (destination k → server k mod n).
`ports`: `keep` the trace's ports, or `lab` (the lab's TCP/UDP port for every connection).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from testworm.errors import UsageError

from . import pcap
from .params import MAX_CONNECTIONS, MAX_DURATION_S
from .schedule import PROTOCOLS, Conn

MAX_TRACE_BYTES = 64 << 20
FORMATS = ("auto", "csv", "pcap")
PORT_MODES = ("keep", "lab")


def detect_format(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise UsageError(f"cannot read trace {path}: {exc.strerror}") from None
    return "pcap" if head in (b"\x0a\x0d\x0d\x0a", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                              b"\xa1\xb2\x3c\x4d") else "csv"


def load(path: str, servers: Sequence[str], *, fmt: str = "auto", wrap: bool = False, ports: str = "keep",
         tcp_port: int = 8080, udp_port: int = 5353, source: str | None = None) -> list[Conn]:
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "pcap":
        rows = pcap_rows(path, source)
    else:
        try:
            if os.path.getsize(path) > MAX_TRACE_BYTES:
                raise UsageError(f"trace {path} is larger than {MAX_TRACE_BYTES >> 20} MiB")
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read trace {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(f"trace {path} is not UTF-8 text (offset {exc.start})") from None
        rows = parse_csv(text, path)
    return to_schedule(rows, servers, wrap=wrap, ports=ports, tcp_port=tcp_port, udp_port=udp_port, what=path)


Row = tuple[str, float, int, str, int | None]  # (where: "line 7" / "connection start 3", time, destination, protocol, port)


def parse_csv(text: str, name: str = "trace") -> list[Row]:
    rows: list[Row] = []
    last = 0.0
    for no, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        f = [x.strip() for x in body.split(",")]
        if not rows and f[0].lower() == "time":
            continue
        where = f"{name} line {no}"
        if len(f) != 4:
            raise UsageError(f"{where}: expected 4 fields (time,destination,protocol,port), found {len(f)}: "
                             f"{body!r}")
        try:
            t = float(f[0])
        except ValueError:
            raise UsageError(f"{where}: time {f[0]!r} is not a number") from None
        if not math.isfinite(t) or t < 0 or t > MAX_DURATION_S:
            raise UsageError(f"{where}: time {f[0]} out of range (0 … {MAX_DURATION_S:g} s)")
        if t < last:
            raise UsageError(f"{where}: time {f[0]} is before the previous line's {last!r} (times must not "
                             "decrease)")
        if not f[1].isdigit():
            raise UsageError(f"{where}: destination {f[1]!r} is not an index (0, 1, 2 …)")
        proto = f[2].lower()
        if proto not in PROTOCOLS:
            raise UsageError(f"{where}: protocol {f[2]!r}: expected tcp or udp")
        port = None
        if f[3]:
            if not f[3].isdigit() or not 1 <= int(f[3]) <= 65535:
                raise UsageError(f"{where}: port {f[3]!r} is not 1 … 65535")
            port = int(f[3])
        if len(rows) >= MAX_CONNECTIONS:
            raise UsageError(f"{where}: more than {MAX_CONNECTIONS:,} connections")
        rows.append((f"line {no}", t, int(f[1]), proto, port))
        last = t
    if not rows:
        raise UsageError(f"{name}: no connections in the trace")
    return rows


def pcap_rows(path: str, source: str | None) -> list[Row]:
    starts = pcap.connection_starts(pcap.read_packets(path)).starts
    sources = sorted({p.src for p in starts})
    if source is None and len(sources) > 1:
        shown = ", ".join(sources[:5]) + (" …" if len(sources) > 5 else "")
        raise UsageError(f"{path}: connection starts from {len(sources)} sources ({shown}): choose one with "
                         "--trace-source")
    chosen = [p for p in starts if source is None or p.src == source]
    if not chosen:
        raise UsageError(f"{path}: no connection starts" + (f" from {source}" if source else ""))
    index: dict[str, int] = {}
    t0 = chosen[0].ts
    rows: list[Row] = []
    for k, p in enumerate(chosen):
        if p.ts - t0 > MAX_DURATION_S:
            raise UsageError(f"{path}: connection start {k} is {p.ts - t0:.0f} s after the first "
                             f"(at most {MAX_DURATION_S:g} s)")
        rows.append((f"connection start {k}", max(0.0, p.ts - t0), index.setdefault(p.dst, len(index)), p.proto, p.dport))
    rows.sort(key=lambda r: r[1])
    return rows


def to_schedule(rows: Sequence[Row], servers: Sequence[str], *, wrap: bool, ports: str, tcp_port: int,
                udp_port: int, what: str = "trace") -> list[Conn]:
    n = len(servers)
    out = []
    for i, (where, t, dest, proto, port) in enumerate(rows):
        if dest >= n and not wrap:
            raise UsageError(f"{what} {where}: destination {dest}, but only {n} server(s) (0 … {n - 1}); give more "
                             "--servers or --wrap")
        lab_port = tcp_port if proto == "tcp" else udp_port
        out.append(Conn(i, t, i, dest % n, servers[dest % n], proto,
                        lab_port if ports == "lab" or port is None else port))
    return out
