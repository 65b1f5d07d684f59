"""The reader in chunks: whatever the chunk size (down to a few bytes, so that nearly every record and block
straddles a boundary), a capture gives exactly the table, attempts, answers, problems and analysis of the
whole-file read; and streaming it holds the chunk, not the file."""

from __future__ import annotations

import os
import struct
import tracemalloc
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.l2 import CookedLinux, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from orchestrator.analysis.attempts import extract_attempts
from orchestrator.analysis.errors import CaptureReadError
from orchestrator.analysis.packets import COLUMNS
from orchestrator.analysis.pcap import CaptureReader, read_capture
from orchestrator.analysis.scan import scan_capture
from orchestrator.analysis.trial import analyse_trial
from tests.cli.test_analyse import trial_files
from tests.support.bulkpcap import write_capture

from .capgen import T0, NgInterface, NgSection, frames, mixed_packets, pcapng_bytes, syn, udp, write_pcap
from .test_bad_input import _GOOD_PCAP, _GOOD_PCAPNG

CHUNKS = (16, 23, 61, 100, 257, 4096)
FACTS = ("path", "format", "interfaces", "partial", "problems", "notes")


def assert_same_packets(a, b) -> None:
    assert len(a) == len(b)
    for c in COLUMNS:
        x, y = getattr(a, c), getattr(b, c)
        assert x.dtype == y.dtype and np.array_equal(x, y), c
    for f in FACTS:
        assert getattr(a, f) == getattr(b, f), f


def assert_same_attempts(a, b) -> None:
    assert a.packets == b.packets and a.udp_mode == b.udp_mode and len(a) == len(b)
    for c in ("index", "ts", "src", "dst", "sport", "dport", "proto", "repeat", "attempt", "vlan"):
        x, y = getattr(a, c), getattr(b, c)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=c == "ts"), c


def _captures(tmp) -> dict:
    """Captures of every kind the reader handles, whole and damaged."""
    out = {}
    pkts = mixed_packets()
    wrpcap(str(tmp / "mixed.pcap"), pkts)
    out["mixed"] = tmp / "mixed.pcap"
    out["big-endian-ns"] = write_pcap(tmp / "be.pcap", frames(pkts), endian=">", nano=True)
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    frag = fragment(e / IP(src="198.18.2.1", dst="198.18.2.2", id=1) / UDP(sport=7, dport=9) / Raw(b"x" * 3000),
                    fragsize=1000)
    out["vlan-frag-cut"] = write_pcap(tmp / "vf.pcap", frames([
        syn("198.18.1.1", "198.18.1.2", 1000, 80, vlan=10), *frag,
        syn("198.18.1.1", "198.18.1.3", 1001, 80, vlan=20, outer=300), udp("198.18.1.1", "198.18.1.4", 7, 9)]),
        caplens=[None, None, 500, None, None, 30, None])
    sll = [(T0 + i, bytes(CookedLinux(pkttype=4, lladdrtype=1, proto=0x0800) / p))
           for i, p in enumerate([IP(src="198.18.5.1", dst="198.18.5.2") / TCP(sport=1, dport=2, flags="S"),
                                  IP(src="198.18.5.2", dst="198.18.5.1") / TCP(sport=2, dport=1, flags="RA")])]
    out["sll"] = write_pcap(tmp / "sll.pcap", sll, linktype=113)
    s1, s2 = bytes(syn("198.18.6.1", "198.18.6.2", 10, 80)), bytes(syn("198.18.6.1", "198.18.6.3", 11, 80, vlan=5))
    raw = bytes(IP(src="198.18.6.9", dst="198.18.6.4") / TCP(sport=12, dport=80, flags="S"))
    multi = pcapng_bytes([
        NgSection(">", [NgInterface(1, name="eth0"), NgInterface(228, tsresol=9), NgInterface(105)],
                  [("epb", 0, T0, s1), ("epb", 1, Decimal("1764050000.123456789"), raw), ("opb", 0, T0 + 2.5, s2),
                   ("epb", 2, T0 + 2.7, bytes(40)), ("epb", 0, T0 + 3, bytes(udp("198.18.6.1", "198.18.6.5", 1, 53)))]),
        NgSection("<", [NgInterface(1, tsresol=0x80 | 20, tsoffset=1_000_000_000)],
                  [("spb", 0, 0.0, s1), ("epb", 0, T0 + 4.25, s2)])])
    (tmp / "multi.pcapng").write_bytes(multi)
    out["pcapng-multi"] = tmp / "multi.pcapng"
    data = out["mixed"].read_bytes()
    (tmp / "trunc.pcap").write_bytes(data[:-7])
    out["truncated"] = tmp / "trunc.pcap"
    (tmp / "trunc-hdr.pcap").write_bytes(data[:len(data) - len(bytes(pkts[-1])) - 7])
    out["truncated-header"] = tmp / "trunc-hdr.pcap"
    bad = bytearray(data)
    third = 24 + sum(16 + len(bytes(p)) for p in pkts[:2])
    struct.pack_into("<I", bad, third + 8, 0x7FFFFFFF)
    (tmp / "corrupt.pcap").write_bytes(bytes(bad))
    out["corrupt-length"] = tmp / "corrupt.pcap"
    (tmp / "trunc.pcapng").write_bytes(multi[:-60])
    out["pcapng-truncated"] = tmp / "trunc.pcapng"
    return out


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    return _captures(tmp_path_factory.mktemp("chunks"))


@pytest.mark.parametrize("name", ["mixed", "big-endian-ns", "vlan-frag-cut", "sll", "pcapng-multi", "truncated",
                                  "truncated-header", "corrupt-length", "pcapng-truncated"])
def test_small_chunks_read_what_the_whole_file_reads(captures, name):
    path = captures[name]
    whole = read_capture(path)
    assert len(whole) > 1
    assert whole.partial == (name in ("truncated", "truncated-header", "corrupt-length", "pcapng-truncated",
                                      "pcapng-multi"))  # pcapng-multi: an interface of link type 105
    att = extract_attempts(whole)
    for chunk in CHUNKS:
        assert_same_packets(read_capture(path, chunk_bytes=chunk), whole)
        sc = scan_capture(path, chunk_bytes=chunk, answers=True)
        assert_same_attempts(sc.attempts(), att)
        assert_same_attempts(sc.attempts("every"), extract_attempts(whole, udp="every"))
        assert_same_packets(sc.answers, whole.select(whole.answer))
        assert (sc.summary.packets, sc.summary.ipv4_packets) == (len(whole), int(whole.ipv4.sum()))
        assert (sc.summary.partial, sc.summary.problems, sc.summary.notes) == (whole.partial, whole.problems,
                                                                               whole.notes)


def test_chunks_are_numbered_in_the_file(captures):
    reader = CaptureReader(captures["mixed"], chunk_bytes=100)
    chunks = list(reader)
    assert len(chunks) > 5 and reader.packets == len(mixed_packets())
    assert np.concatenate([c.index for c in chunks]).tolist() == list(range(reader.packets))
    with pytest.raises(RuntimeError, match="iterated once"):
        list(reader)


def test_analysis_in_chunks_equals_the_whole_file(tmp_path):
    pcap, thr, worm = trial_files(tmp_path, leak=True)
    whole = analyse_trial(pcap, throttle_log=thr, worm_logs=[worm], capture_offset_s=0.5).to_dict()
    assert whole["metrics"]["sources"] and whole["errors"] > 0  # the leak is found
    for chunk in (16, 77, 300):
        sc = scan_capture(pcap, chunk_bytes=chunk)
        assert analyse_trial(sc, throttle_log=thr, worm_logs=[worm], capture_offset_s=0.5).to_dict() == whole
        assert sc.attempts().ts.tolist() == extract_attempts(read_capture(pcap)).ts.tolist()  # offset not applied


def test_bulk_capture_in_small_chunks(tmp_path):
    """200,000 generated packets through 64 KiB chunks (~3,000 boundaries): the same table and analysis."""
    path = tmp_path / "bulk.pcap"
    counts = write_capture(path, 200_000, block=50_000)
    whole = read_capture(path)
    assert_same_packets(read_capture(path, chunk_bytes=65_536), whole)
    d = analyse_trial(path).to_dict()
    assert d["syn_attempts"] == counts["tcp-syn"] + counts["tcp-syn-vlan"] == int(whole.syn.sum())
    assert analyse_trial(scan_capture(path, chunk_bytes=65_536)).to_dict() == d


def test_streaming_memory_is_bounded_by_the_chunk(tmp_path):
    """Streaming 400,000 packets (~38 MiB) in 1 MiB chunks holds a few chunks' worth, not the file; the
    whole-file table does grow with it."""
    path = tmp_path / "bulk.pcap"
    write_capture(path, 400_000)
    assert path.stat().st_size > 36 << 20
    tracemalloc.start()
    try:
        reader = CaptureReader(path, chunk_bytes=1 << 20)
        syn = sum(int(np.count_nonzero(c.syn)) for c in reader)
        _, streamed = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        scan = scan_capture(path, chunk_bytes=1 << 20)
        _, scanned = tracemalloc.get_traced_memory()
        del scan
        tracemalloc.reset_peak()
        whole = read_capture(path, chunk_bytes=1 << 20)
        _, table = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert syn == int(whole.syn.sum()) and reader.packets == 400_000
    assert streamed < 8 << 20, streamed  # ~1 MiB buffer + one chunk's columns
    attempts = int((whole.syn | whole.udp).sum())
    assert scanned < (8 << 20) + 100 * attempts, (scanned, attempts)  # the chunk + the attempt rows
    assert table > 40 * 400_000  # the whole-file table: ~60 bytes a record


_DAMAGED = st.tuples(st.sampled_from(["pcap", "pcapng"]), st.integers(0, 2000),
                     st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
                     st.integers(16, 300))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_DAMAGED)
def test_damaged_files_read_the_same_in_chunks(tmp_path, case):
    """Truncated or byte-flipped captures: chunked and whole reads agree — the same rows, the same problems,
    or the same error."""
    which, cut, flips, chunk = case
    data = bytearray(_GOOD_PCAP if which == "pcap" else _GOOD_PCAPNG)
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    path = tmp_path / f"fuzz.{which}"
    path.write_bytes(bytes(data[:cut]))
    try:
        whole = read_capture(path)
    except CaptureReadError as exc:
        with pytest.raises(CaptureReadError) as ei:
            read_capture(path, chunk_bytes=chunk)
        assert str(ei.value) == str(exc)
        return
    assert_same_packets(read_capture(path, chunk_bytes=chunk), whole)
