"""The capture reader against captures with known contents (scapy-built frames), and against tshark."""

from __future__ import annotations

import struct
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, PcapWriter, wrpcap

from orchestrator.analysis.attempts import extract_attempts, ip_to_int
from orchestrator.analysis.pcap import FRAG_FIRST, FRAG_LATER, FRAG_NONE, TS_UNKNOWN, read_capture

from .capgen import (
    T0,
    NgInterface,
    NgSection,
    eth,
    frames,
    mixed_packets,
    pcapng_bytes,
    syn,
    tshark_counts,
    tshark_fields,
    udp,
    write_pcap,
)


def counts(path):
    return extract_attempts(read_capture(path)).totals()


def assert_same_as_tshark(path):
    ours = counts(path)
    theirs = tshark_counts(path)
    assert {k: ours[k] for k in theirs} == theirs


# --------------------------------------------------------------------------------------------- contents

def test_mixed_ethernet_fields_and_counts(tmp_path):
    pkts = mixed_packets()
    path = tmp_path / "mixed.pcap"
    wrpcap(str(path), pkts)
    pk = read_capture(path)
    assert len(pk) == len(pkts) and not pk.partial and pk.format == "pcap" and pk.linktypes == [1]
    assert pk.src[0] == ip_to_int("198.18.0.1") and pk.dst[0] == ip_to_int("198.18.0.2")
    assert (pk.sport[0], pk.dport[0], pk.tcp_flags[0]) == (40000, 80, 0x02)
    assert pk.syn.tolist() == [True, True, False, False, True, False, True] + [False] * 6
    assert pk.udp.tolist() == [False] * 7 + [True, True, True, False, False, False]
    assert not pk.ipv4[10] and pk.ipv4[11] and pk.proto[11] == 1  # ARP; ICMP quoting UDP is not UDP
    assert not pk.ipv4[12]  # IPv6
    np.testing.assert_allclose(pk.ts, [T0 + i * 0.25 for i in range(len(pkts))], atol=1e-6)
    att = extract_attempts(pk)
    assert att.totals() == {"packets": 13, "syn_attempts": 4, "syn_retransmissions": 1, "udp_attempts": 2,
                            "udp_datagrams": 3}
    assert att.repeat[att.proto == 6].tolist() == [False, False, True, False]
    assert_same_as_tshark(path)


def test_udp_attempt_modes(tmp_path):
    path = tmp_path / "mixed.pcap"
    wrpcap(str(path), mixed_packets())
    pk = read_capture(path)
    assert extract_attempts(pk, udp="first_per_flow").totals()["udp_attempts"] == 3
    assert extract_attempts(pk, udp="every").totals()["udp_attempts"] == 3
    assert extract_attempts(pk, udp="none").totals()["udp_attempts"] == 0
    with pytest.raises(ValueError, match="udp mode"):
        extract_attempts(pk, udp="some")


def test_vlan_and_qinq(tmp_path):
    pkts = [syn("198.18.1.1", "198.18.1.2", 1000, 80, vlan=10),
            syn("198.18.1.1", "198.18.1.3", 1001, 80, vlan=20, outer=300),
            udp("198.18.1.1", "198.18.1.4", 7, 9, vlan=4094),
            syn("198.18.1.1", "198.18.1.5", 1002, 80)]
    path = tmp_path / "vlan.pcap"
    wrpcap(str(path), pkts)
    pk = read_capture(path)
    assert pk.vlan.tolist() == [10, 300, 4094, -1]
    assert pk.vlan_inner.tolist() == [-1, 20, -1, -1]
    assert pk.dst.tolist() == [ip_to_int(f"198.18.1.{i}") for i in (2, 3, 4, 5)]
    assert pk.syn.sum() == 3 and pk.udp.sum() == 1
    assert_same_as_tshark(path)


def test_fragments_only_first_carries_l4(tmp_path):
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    big_udp = fragment(e / IP(src="198.18.2.1", dst="198.18.2.2", id=1) / UDP(sport=7, dport=9) / Raw(b"x" * 3000),
                       fragsize=1000)
    big_syn = fragment(e / IP(src="198.18.2.1", dst="198.18.2.3", id=2) / TCP(sport=99, dport=80, flags="S")
                       / Raw(b"y" * 100), fragsize=48)
    # a later fragment whose payload looks like a TCP SYN header at its start: must not count
    fake = bytes(TCP(sport=1, dport=2, flags="S"))
    later = e / IP(src="198.18.2.1", dst="198.18.2.4", id=3, proto=6, frag=10, flags="MF") / Raw(fake)
    pkts = [*big_udp, *big_syn, later]
    path = tmp_path / "frag.pcap"
    wrpcap(str(path), pkts)
    pk = read_capture(path)
    assert pk.frag.tolist() == [FRAG_FIRST, FRAG_LATER, FRAG_LATER, FRAG_LATER,
                                FRAG_FIRST, FRAG_LATER, FRAG_LATER, FRAG_LATER]
    assert pk.l4.tolist() == [True, False, False, False, True, False, False, False]
    assert pk.syn.sum() == 1 and pk.udp.sum() == 1 and pk.dport[4] == 80
    unfragmented = read_capture(_one(tmp_path, syn("198.18.2.1", "198.18.2.9", 5, 6)))
    assert unfragmented.frag.tolist() == [FRAG_NONE]
    assert_same_as_tshark(path)


def _one(tmp_path, pkt):
    path = tmp_path / "one.pcap"
    wrpcap(str(path), [pkt])
    return path


def test_ip_options_and_snaplen_cut(tmp_path):
    with_opts = eth(IP(src="198.18.3.1", dst="198.18.3.2", options=b"\x01\x01\x01\x00"),
                    TCP(sport=5, dport=6, flags="S"))
    plain = syn("198.18.3.1", "198.18.3.3", 7, 8)
    cut = syn("198.18.3.1", "198.18.3.4", 9, 10)
    fr = frames([with_opts, plain, cut])
    path = write_pcap(tmp_path / "cut.pcap", fr, caplens=[None, None, 40])  # TCP flags beyond byte 40
    pk = read_capture(path)
    assert pk.syn.tolist() == [True, True, False]
    assert pk.ipv4.tolist() == [True, True, True] and not pk.l4[2]
    assert pk.caplen.tolist()[2] == 40 and pk.wirelen.tolist()[2] == len(fr[2][1])
    assert_same_as_tshark(path)


def test_big_endian_pcap(tmp_path):
    pkts = mixed_packets()
    le = write_pcap(tmp_path / "le.pcap", frames(pkts))
    be = write_pcap(tmp_path / "be.pcap", frames(pkts), endian=">")
    a, b = read_capture(le), read_capture(be)
    for col in ("ts_ns", "src", "dst", "sport", "dport", "tcp_flags", "caplen"):
        assert (getattr(a, col) == getattr(b, col)).all(), col
    assert_same_as_tshark(be)


def test_nanosecond_pcap(tmp_path):
    pkts = [syn("198.18.4.1", "198.18.4.2", 1, 2), udp("198.18.4.1", "198.18.4.3", 3, 4)]
    pkts[0].time, pkts[1].time = Decimal("1764050000.123456789"), Decimal("1764050002.000000001")
    path = tmp_path / "ns.pcap"
    with PcapWriter(str(path), nano=True) as w:
        w.write(pkts)
    pk = read_capture(path)
    assert pk.interfaces[0].tsresol == "ns"
    assert pk.ts_ns.tolist() == [1764050000_123456789, 1764050002_000000001]
    epoch = [r[0].replace(".", "") for r in tshark_fields(path, None, "frame.time_epoch")]
    assert [int(x) for x in epoch] == pk.ts_ns.tolist()
    mine = read_capture(write_pcap(tmp_path / "ns2.pcap", [(1.5, bytes(pkts[0]))], nano=True, endian=">"))
    assert mine.ts_ns.tolist() == [1_500_000_000]
    assert_same_as_tshark(path)


@pytest.mark.parametrize("linktype, build", [
    (113, lambda p: CookedLinux(pkttype=4, lladdrtype=1, proto=0x0800) / p),
    (276, lambda p: CookedLinuxV2(proto=0x0800) / p),
    (101, lambda p: p),
    (228, lambda p: p),
    (0, lambda p: struct.pack("<I", 2) + bytes(p)),
    (108, lambda p: struct.pack(">I", 2) + bytes(p)),
])
def test_other_link_types(tmp_path, linktype, build):
    ips = [IP(src="198.18.5.1", dst="198.18.5.2") / TCP(sport=1, dport=2, flags="S"),
           IP(src="198.18.5.1", dst="198.18.5.3") / UDP(sport=3, dport=4),
           IP(src="198.18.5.2", dst="198.18.5.1") / TCP(sport=2, dport=1, flags="SA")]
    fr = [(T0 + i, bytes(build(p))) for i, p in enumerate(ips)]
    path = write_pcap(tmp_path / f"lt{linktype}.pcap", fr, linktype=linktype)
    pk = read_capture(path)
    assert pk.linktypes == [linktype]
    assert pk.syn.tolist() == [True, False, False] and pk.udp.tolist() == [False, True, False]
    assert pk.dport.tolist() == [2, 4, 1]
    assert_same_as_tshark(path)


# ----------------------------------------------------------------------------------------------- pcapng

def test_pcapng_written_by_scapy(tmp_path):
    pkts = mixed_packets()
    path = tmp_path / "mixed.pcapng"
    w = PcapNgWriter(str(path))
    for p in pkts:
        w.write(p)
    w.close()
    pk = read_capture(path)
    assert pk.format == "pcapng" and len(pk) == len(pkts) and not pk.partial
    np.testing.assert_allclose(pk.ts, [T0 + i * 0.25 for i in range(len(pkts))], atol=1e-6)
    assert extract_attempts(pk).totals()["syn_attempts"] == 4
    assert_same_as_tshark(path)


def test_pcapng_sections_interfaces_resolutions_and_blocks(tmp_path):
    s1 = syn("198.18.6.1", "198.18.6.2", 10, 80)
    s2 = syn("198.18.6.1", "198.18.6.3", 11, 80, vlan=5)
    raw = IP(src="198.18.6.9", dst="198.18.6.4") / TCP(sport=12, dport=80, flags="S")
    u = udp("198.18.6.1", "198.18.6.5", 13, 53)
    big = NgSection(">", [NgInterface(1, name="eth0"), NgInterface(228, tsresol=9)],
                    [("epb", 0, T0 + 0.000001, bytes(s1)), ("epb", 1, Decimal("1764050000.123456789"), bytes(raw)),
                     ("opb", 0, T0 + 2.5, bytes(s2)), ("epb", 0, T0 + 3, bytes(u))])
    little = NgSection("<", [NgInterface(1, tsresol=0x80 | 20, tsoffset=1_000_000_000)],
                       [("spb", 0, 0.0, bytes(s1)), ("epb", 0, T0 + 4.25, bytes(s2))])
    path = tmp_path / "multi.pcapng"
    path.write_bytes(pcapng_bytes([big, little]))
    pk = read_capture(path)
    assert not pk.partial, pk.problems
    assert [f.linktype for f in pk.interfaces] == [1, 228, 1]
    assert [f.tsresol for f in pk.interfaces] == ["us", "ns", "2^-20"]
    assert pk.interfaces[0].name == "eth0"
    assert pk.iface.tolist() == [0, 1, 0, 0, 2, 2]
    assert pk.ts_ns[1] == 1764050000_123456789
    assert pk.ts_ns[4] == TS_UNKNOWN and np.isnan(pk.ts[4])
    assert abs(pk.ts_ns[5] - int((T0 + 4.25) * 1e9)) < 1000  # binary resolution, with if_tsoffset
    assert pk.syn.tolist() == [True, True, True, False, True, True]
    assert pk.vlan.tolist() == [-1, -1, 5, -1, -1, 5]
    assert any("Simple Packet Blocks" in n for n in pk.notes)
    assert_same_as_tshark(path)


def test_pcapng_empty_section_has_no_packets(tmp_path):
    path = tmp_path / "empty.pcapng"
    path.write_bytes(pcapng_bytes([NgSection("<", [NgInterface(1)], [])]))
    pk = read_capture(path)
    assert len(pk) == 0 and not pk.partial and "no packets" in pk.notes[0]


# ---------------------------------------------------------------------------------- property: vs scapy

_ADDR = st.integers(0, 3).map(lambda i: f"198.18.7.{i + 1}")


@st.composite
def _packet(draw):
    proto = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    ip = IP(src=draw(_ADDR), dst=draw(_ADDR), ihl=None,
            options=draw(st.sampled_from([[], b"\x01\x01\x01\x00", b"\x01" * 8])))
    frag = draw(st.sampled_from([0, 0, 0, 3]))
    ip.frag = frag
    if draw(st.booleans()):
        ip.flags = "MF"
    if proto == "tcp":
        l4 = TCP(sport=draw(st.integers(1, 4)), dport=80, flags=draw(st.integers(0, 63)))
    elif proto == "udp":
        l4 = UDP(sport=draw(st.integers(1, 4)), dport=draw(st.sampled_from([53, 54])))
    else:
        l4 = Raw(b"\x08\x00" + bytes(6))
        ip.proto = 1
    vlan = draw(st.sampled_from([None, None, 7]))
    return eth(ip, l4, Raw(b"z" * draw(st.integers(0, 30))), vlan=vlan)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_packet(), min_size=1, max_size=30))
def test_reader_agrees_with_scapy_dissection(tmp_path, pkts):
    """Every field of every packet equals scapy's own dissection of the same bytes."""
    path = write_pcap(tmp_path / "prop.pcap", [(T0 + i, bytes(p)) for i, p in enumerate(pkts)])
    pk = read_capture(path)
    assert len(pk) == len(pkts)
    for i, raw in enumerate(frames(pkts)):
        d = Ether(raw[1])
        ip = d[IP]
        assert pk.src[i] == ip_to_int(ip.src) and pk.dst[i] == ip_to_int(ip.dst) and pk.proto[i] == ip.proto
        assert pk.vlan[i] == (7 if d.haslayer("Dot1Q") else -1)
        first = ip.frag == 0
        assert pk.frag[i] == (FRAG_LATER if not first else FRAG_FIRST if ip.flags.MF else FRAG_NONE)
        has_tcp = first and ip.proto == 6 and d.haslayer(TCP)
        has_udp = first and ip.proto == 17 and d.haslayer(UDP)
        assert pk.l4[i] == (has_tcp or has_udp)
        if has_tcp:
            assert (pk.sport[i], pk.dport[i], pk.tcp_flags[i]) == (d[TCP].sport, d[TCP].dport, int(d[TCP].flags))
        if has_udp:
            assert (pk.sport[i], pk.dport[i]) == (d[UDP].sport, d[UDP].dport)


def test_tshark_filter_from_the_issue(tmp_path):
    """The literal tshark filter (frame count of SYN without ACK) agrees with ours on the mixed capture."""
    path = tmp_path / "mixed.pcap"
    wrpcap(str(path), mixed_packets())
    rows = tshark_fields(path, "ip && tcp.flags.syn==1 && tcp.flags.ack==0", "frame.number")
    assert [int(r[0]) - 1 for r in rows] == np.flatnonzero(read_capture(path).syn).tolist()


@pytest.mark.parametrize("resol", [28, 40, 127, 0x80 | 64, 0x80 | 127])
def test_an_absurd_if_tsresol_gives_timestamps_not_an_overflow(resol):
    """A damaged pcapng can claim 10^-28 s or 2^-127 s units: no 64-bit count then reaches a nanosecond past
    the offset (10**19 does not fit an int64; 1 << 64 does not fit a uint64) — the reader must not raise."""
    from orchestrator.analysis.pcapng import _units_to_ns
    units = np.array([0, 12345, 2**63 - 1], dtype=np.uint64)
    got = _units_to_ns(units, resol, 7)
    assert got.dtype == np.int64
    assert list(got) == [7_000_000_000] * 2 + [7_000_000_000 + (0 if resol in (28, 40, 127) else int(
        round((2**63 - 1) * 1e9 / 2.0 ** (resol & 0x7F))))]
