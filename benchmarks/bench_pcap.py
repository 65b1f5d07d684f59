"""Benchmark: attempt extraction from a 1,000,000-packet pcap, beside dpkt's full dissection and tshark's count.

Writes the capture itself (NumPy scatter of a few frame templates with per-packet addresses, ports and
timestamps; no scapy), in a temporary directory that is removed afterwards. Prints packets/s for each reader.

    .venv/bin/python benchmarks/bench_pcap.py [--packets N] [--dpkt-sample N] [--no-tshark]
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.analysis.attempts import extract_attempts  # noqa: E402
from orchestrator.analysis.pcap import read_capture  # noqa: E402

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def _ip_frame(proto: int, l4: bytes, payload: int = 0, vlan: int | None = None) -> bytes:
    ip_len = 20 + len(l4) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, ip_len, 1, 0x4000, 64, proto, 0, bytes(4), bytes(4))
    tag = struct.pack(">HH", 0x8100, vlan) if vlan is not None else b""
    frame = MAC_B + MAC_A + tag + b"\x08\x00" + ip + l4 + bytes(payload)
    return frame + bytes(max(0, 60 - len(frame)))


def _tcp(flags: int) -> bytes:
    return struct.pack(">HHIIBBHHH", 0, 0, 1, 0, 0x50, flags, 64240, 0, 0)


# (name, frame, share of packets, offset of the IPv4 header)
TEMPLATES = [
    ("tcp-syn", _ip_frame(6, _tcp(0x02)), 0.40, 14),
    ("tcp-syn-vlan", _ip_frame(6, _tcp(0x02), vlan=42), 0.05, 18),
    ("tcp-synack", _ip_frame(6, _tcp(0x12)), 0.15, 14),
    ("tcp-data", _ip_frame(6, _tcp(0x18), payload=120), 0.20, 14),
    ("udp", _ip_frame(17, struct.pack(">HHHH", 0, 0, 8 + 30, 0), payload=30), 0.15, 14),
    ("arp", MAC_B + MAC_A + b"\x08\x06" + bytes(46), 0.05, None),
]


def write_capture(path: Path, n: int, seed: int = 1) -> dict[str, int]:
    """A little-endian µs pcap of n Ethernet packets; returns how many of each template it holds."""
    rng = np.random.default_rng(seed)
    shares = np.array([t[2] for t in TEMPLATES])
    kind = rng.choice(len(TEMPLATES), size=n, p=shares / shares.sum())
    lens = np.array([len(t[1]) for t in TEMPLATES])[kind]
    rec_off = 24 + np.concatenate(([0], np.cumsum(16 + lens)[:-1]))
    size = int(rec_off[-1] + 16 + lens[-1])
    buf = np.zeros(size + 256, np.uint8)

    def put(offs: np.ndarray, values: np.ndarray) -> None:
        """Write values[i] at byte offset offs[i] (a 1-d uint8 array is one value written at every offset)."""
        width = values.size if values.dtype == np.uint8 else values.dtype.itemsize
        view = np.ndarray(shape=(buf.size - width + 1,), dtype=np.dtype((np.void, width)), buffer=buf,
                          strides=(1,))
        view[offs] = np.ascontiguousarray(values).view(np.dtype((np.void, width)))

    ts = 1_764_050_000_000_000 + np.cumsum(rng.integers(1, 20, n))  # µs, strictly increasing
    put(rec_off, (ts // 1_000_000).astype("<u4"))
    put(rec_off + 4, (ts % 1_000_000).astype("<u4"))
    put(rec_off + 8, lens.astype("<u4"))
    put(rec_off + 12, lens.astype("<u4"))
    counts = {}
    for k, (name, frame, _share, l3) in enumerate(TEMPLATES):
        sel = np.flatnonzero(kind == k)
        counts[name] = len(sel)
        data = rec_off[sel] + 16
        put(data, np.frombuffer(frame, dtype=np.uint8))
        if l3 is None:
            continue
        # 64 infected sources scanning a /16; about 1 SYN in 10 repeats (same 4-tuple) an earlier one
        src = (0xC6120000 + rng.integers(1, 65, len(sel))).astype(">u4")
        dst = (0xC6130000 + rng.integers(0, 65536, len(sel))).astype(">u4")
        sport = rng.integers(32768, 61000, len(sel)).astype(">u2")
        dport = rng.choice(np.array([80, 443, 8080, 53], ">u2"), len(sel))
        if name.startswith("tcp-syn") and len(sel) > 10:
            rep = rng.random(len(sel)) < 0.1
            rep[:10] = False
            j = np.flatnonzero(rep)
            earlier = (j * rng.random(len(j))).astype(np.int64)
            src[j], dst[j], sport[j], dport[j] = src[earlier], dst[earlier], sport[earlier], dport[earlier]
        put(data + l3 + 12, src)
        put(data + l3 + 16, dst)
        put(data + l3 + 20, sport)
        put(data + l3 + 22, dport)
    buf[:24] = np.frombuffer(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1), np.uint8)
    path.write_bytes(buf[:size].tobytes())
    return counts


def bench_ours(path: Path, repeats: int = 3) -> tuple[float, dict[str, int]]:
    best = float("inf")
    totals: dict[str, int] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        att = extract_attempts(read_capture(path))
        best = min(best, time.perf_counter() - t0)
        totals = att.totals()
    return best, totals


def bench_dpkt(path: Path, sample: int | None) -> tuple[float, int, int]:
    """dpkt: frame every record with dpkt.pcap.Reader and fully dissect Ethernet/IP/TCP/UDP objects."""
    import dpkt

    t0 = time.perf_counter()
    n = syn = 0
    with open(path, "rb") as fh:
        for _ts, raw in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(raw)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                if ip.data.flags & dpkt.tcp.TH_SYN and not ip.data.flags & dpkt.tcp.TH_ACK:
                    syn += 1
            n += 1
            if sample and n >= sample:
                break
    return time.perf_counter() - t0, n, syn


def bench_tshark(path: Path) -> tuple[float, int] | None:
    exe = shutil.which("tshark")
    if not exe:
        return None
    t0 = time.perf_counter()
    r = subprocess.run([exe, "-n", "-r", str(path), "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0",
                        "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, timeout=900)
    dt = time.perf_counter() - t0
    return dt, r.stdout.count("\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--dpkt-sample", type=int, default=200_000,
                    help="dissect only the first N packets with dpkt and extrapolate (0: the whole file)")
    ap.add_argument("--no-tshark", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pcap-"))
    try:
        path = tmp / "bench.pcap"
        t0 = time.perf_counter()
        counts = write_capture(path, args.packets)
        print(f"capture: {args.packets:,} packets, {path.stat().st_size / 1e6:.1f} MB, written in "
              f"{time.perf_counter() - t0:.2f} s ({', '.join(f'{k} {v:,}' for k, v in counts.items())})")
        dt, totals = bench_ours(path)
        print(f"ours   read+extract (best of 3): {dt:7.3f} s  {args.packets / dt:12,.0f} packets/s  "
              f"syn_attempts={totals['syn_attempts']:,} udp_attempts={totals['udp_attempts']:,}")
        sample = args.dpkt_sample or None
        ddt, dn, dsyn = bench_dpkt(path, sample)
        how = f"first {dn:,} packets, extrapolated" if sample and dn < args.packets else "whole file"
        print(f"dpkt   full dissection ({how}): {ddt * args.packets / dn:7.3f} s  {dn / ddt:12,.0f} packets/s"
              + (f"  syn={dsyn:,}" if dn == args.packets else ""))
        if not args.no_tshark:
            ts = bench_tshark(path)
            if ts is None:
                print("tshark not installed: skipped")
            else:
                print(f"tshark SYN count (whole file):   {ts[0]:7.3f} s  {args.packets / ts[0]:12,.0f} packets/s  "
                      f"syn={ts[1]:,}" + ("" if ts[1] == totals["syn_attempts"] else "  MISMATCH with ours"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
