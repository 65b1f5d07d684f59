"""Big pcap captures fast, for benchmarks and memory tests: a NumPy scatter of a few Ethernet frame templates
(SYN, VLAN-tagged SYN with ~10 % retransmissions, SYN-ACK, data, UDP, ARP) with per-packet addresses, ports and
timestamps, written a block at a time. No scapy: a million packets take about a second.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

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


def _records(n: int, rng, t_us: int) -> tuple[bytes, dict[str, int], int]:
    """n pcap records (Ethernet), their template counts, and the timestamp (µs) after the last one."""
    shares = np.array([t[2] for t in TEMPLATES])
    kind = rng.choice(len(TEMPLATES), size=n, p=shares / shares.sum())
    lens = np.array([len(t[1]) for t in TEMPLATES])[kind]
    rec_off = np.concatenate(([0], np.cumsum(16 + lens)[:-1]))
    size = int(rec_off[-1] + 16 + lens[-1])
    buf = np.zeros(size + 256, np.uint8)

    def put(offs: np.ndarray, values: np.ndarray) -> None:
        """Write values[i] at byte offset offs[i] (a 1-d uint8 array is one value written at every offset)."""
        width = values.size if values.dtype == np.uint8 else values.dtype.itemsize
        view = np.ndarray(shape=(buf.size - width + 1,), dtype=np.dtype((np.void, width)), buffer=buf,
                          strides=(1,))
        view[offs] = np.ascontiguousarray(values).view(np.dtype((np.void, width)))

    ts = t_us + np.cumsum(rng.integers(1, 20, n))  # µs, strictly increasing
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
    return buf[:size].tobytes(), counts, int(ts[-1])


def write_capture(path: Path, n: int, seed: int = 1, block: int = 500_000) -> dict[str, int]:
    """A little-endian µs pcap of n Ethernet packets, written `block` packets at a time (retransmissions
    repeat a SYN of their own block); returns how many packets of each template it holds."""
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys((t[0] for t in TEMPLATES), 0)
    t_us = 1_764_050_000_000_000
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for start in range(0, n, block):
            data, c, t_us = _records(min(block, n - start), rng, t_us)
            fh.write(data)
            for k, v in c.items():
                counts[k] += v
    return counts
