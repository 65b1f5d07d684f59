"""Bad captures: a clear message naming the file and what is wrong; what can be read is read, flagged partial."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.utils import wrpcap

from orchestrator.analysis.attempts import extract_attempts
from orchestrator.analysis.errors import CaptureReadError
from orchestrator.analysis.pcap import read_capture

from .capgen import (
    NgInterface,
    NgSection,
    frames,
    mixed_packets,
    pcapng_bytes,
    syn,
    tshark_counts,
    write_pcap,
)


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.pcap"
    wrpcap(str(path), mixed_packets())
    return path


def _error(path) -> CaptureReadError:
    with pytest.raises(CaptureReadError) as ei:
        read_capture(path)
    assert ei.value.exit_code == 2
    assert str(path) in str(ei.value)
    return ei.value


def test_missing_file(tmp_path):
    assert "no such file" in str(_error(tmp_path / "nope.pcap"))


def test_directory(tmp_path):
    assert "is a directory" in str(_error(tmp_path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    assert "empty file (0 bytes)" in str(_error(path))


def test_not_a_capture(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello world, this is text\n")
    err = _error(path)
    assert "not a pcap or pcapng file" in str(err) and "68 65 6c 6c" in str(err)


def test_short_pcap_header(tmp_path, good):
    path = tmp_path / "short.pcap"
    path.write_bytes(good.read_bytes()[:20])
    assert "pcap file header cut short (20 of 24 bytes)" in str(_error(path))


def test_header_only_is_empty_not_partial(tmp_path, good):
    path = tmp_path / "hdr.pcap"
    path.write_bytes(good.read_bytes()[:24])
    pk = read_capture(path)
    assert len(pk) == 0 and not pk.partial
    assert pk.notes == ["the capture contains no packets (only its file header)"]
    assert extract_attempts(pk).totals()["syn_attempts"] == 0


def test_unsupported_link_type(tmp_path):
    path = write_pcap(tmp_path / "wifi.pcap", [(1.0, b"\x00" * 40)], linktype=105)
    err = _error(path)
    assert "link type 105 (IEEE802_11) is not supported" in str(err)
    assert "1 ETHERNET" in err.hint


def test_truncated_last_packet(tmp_path, good):
    data = good.read_bytes()
    path = tmp_path / "trunc.pcap"
    path.write_bytes(data[:-7])
    pk = read_capture(path)
    n = len(mixed_packets())
    assert len(pk) == n - 1 and pk.partial
    assert f"file ends in the middle of packet {n}" in pk.problems[0]
    assert extract_attempts(pk).totals() == {k: v for k, v in tshark_counts(path).items()} | {
        "syn_retransmissions": 1}


def test_truncated_inside_record_header(tmp_path, good):
    data = good.read_bytes()
    path = tmp_path / "trunc.pcap"
    n = len(mixed_packets())
    # cut in the middle of the last record's 16-byte header
    last = _record_offsets(data)[-1]
    path.write_bytes(data[:last + 9])
    pk = read_capture(path)
    assert len(pk) == n - 1 and pk.partial
    assert f"file ends inside the record header of packet {n} (9 of 16 bytes" in pk.problems[0]


def _record_offsets(data: bytes) -> list[int]:
    offs, off = [], 24
    while off < len(data):
        offs.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return offs


def test_corrupt_record_length_midway(tmp_path, good):
    data = bytearray(good.read_bytes())
    third = _record_offsets(bytes(data))[2]
    struct.pack_into("<I", data, third + 8, 0x7FFFFFFF)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    pk = read_capture(path)
    assert len(pk) == 2 and pk.partial
    assert "corrupt record header of packet 3" in pk.problems[0] and "read the 2 packets before it" in pk.problems[0]


def test_pcapng_truncated_last_block(tmp_path):
    sec = NgSection("<", [NgInterface(1)], [("epb", 0, float(i), bytes(p)) for i, p in enumerate(mixed_packets())])
    data = pcapng_bytes([sec])
    isb = 12 + 12  # the writer ends each section with a 24-byte statistics block
    path = tmp_path / "trunc.pcapng"
    path.write_bytes(data[:-isb - 10])
    pk = read_capture(path)
    assert pk.partial and len(pk) == len(sec.packets) - 1
    assert "file ends in the middle of a packet block" in pk.problems[0]


def test_pcapng_corrupt_trailer(tmp_path):
    pkts = [syn("198.18.9.1", f"198.18.9.{i + 2}", 1000 + i, 80) for i in range(4)]
    sec = NgSection("<", [NgInterface(1)], [("epb", 0, float(i), bytes(p)) for i, p in enumerate(pkts)])
    data = bytearray(pcapng_bytes([sec]))
    # the third EPB: find it by walking blocks
    off, seen = 0, 0
    while True:
        btype, blen = struct.unpack_from("<II", data, off)
        if btype == 6:
            seen += 1
            if seen == 3:
                struct.pack_into("<I", data, off + blen - 4, blen + 4)
                break
        off += blen
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(data))
    pk = read_capture(path)
    assert pk.partial and len(pk) == 2
    assert f"corrupt packet block at byte {off}: trailing length" in pk.problems[0]


def test_pcapng_unsupported_interface_only(tmp_path):
    sec = NgSection("<", [NgInterface(105)], [("epb", 0, 1.0, b"\x00" * 40)])
    path = tmp_path / "wifi.pcapng"
    path.write_bytes(pcapng_bytes([sec]))
    err = _error(path)
    assert "link type 105 (IEEE802_11) not supported; none of its 1 packets can be analysed" in str(err)


def test_pcapng_mixed_supported_and_unsupported_interfaces(tmp_path):
    p = syn("198.18.9.1", "198.18.9.2", 1, 2)
    sec = NgSection("<", [NgInterface(1), NgInterface(105)],
                    [("epb", 0, 1.0, bytes(p)), ("epb", 1, 2.0, b"\x00" * 40), ("epb", 0, 3.0, bytes(p))])
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(pcapng_bytes([sec]))
    pk = read_capture(path)
    assert len(pk) == 3 and pk.partial and pk.syn.tolist() == [True, False, True]
    assert "1 packets on interface 1 have unsupported link type 105" in pk.problems[0]


def test_pcapng_bad_byte_order_magic(tmp_path):
    data = bytearray(pcapng_bytes([NgSection()]))
    data[8:12] = b"\x00\x00\x00\x00"
    path = tmp_path / "bom.pcapng"
    path.write_bytes(bytes(data))
    assert "invalid byte-order magic" in str(_error(path))


def test_modified_pcap_format_refused(tmp_path):
    path = write_pcap(tmp_path / "x.pcap", frames(mixed_packets()[:1]))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 0, 0xA1B2CD34)
    path.write_bytes(bytes(data))
    err = _error(path)
    assert "Kuznetzov" in str(err) and "editcap" in err.hint


def test_pcapng_cut_inside_its_first_header(tmp_path):
    path = tmp_path / "stub.pcapng"
    path.write_bytes(pcapng_bytes([NgSection()])[:10])
    assert "no readable pcapng section header: file ends inside a block header at byte 0" in str(_error(path))
    path.write_bytes(pcapng_bytes([NgSection()])[:20])
    assert "has length 28 beyond the end of the file" in str(_error(path))


def test_pcapng_damage_reports_the_first_problem_only(tmp_path):
    pkts = [syn("198.18.9.1", f"198.18.9.{i + 2}", 1000 + i, 80) for i in range(5)]
    sec = NgSection("<", [NgInterface(1)], [("epb", 0, float(i), bytes(p)) for i, p in enumerate(pkts)])
    data = bytearray(pcapng_bytes([sec]))
    off, seen = 0, 0
    while True:  # shorten the second EPB's length by 8: the walk goes on misframed through garbage
        btype, blen = struct.unpack_from("<II", data, off)
        if btype == 6:
            seen += 1
            if seen == 2:
                struct.pack_into("<I", data, off + 4, blen - 8)
                break
        off += blen
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(data))
    pk = read_capture(path)
    assert pk.partial and len(pk) == 1
    assert pk.problems == [f"corrupt packet block at byte {off}: block length {blen - 8} cannot hold "
                           f"{len(bytes(pkts[1]))} captured bytes"]


_GOOD_PCAP = b"".join(  # built once: hypothesis below damages copies of these bytes
    [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    + [struct.pack("<IIII", 1, i, len(bytes(p)), len(bytes(p))) + bytes(p) for i, p in enumerate(mixed_packets())])
_GOOD_PCAPNG = pcapng_bytes([
    NgSection(">", [NgInterface(1), NgInterface(228, tsresol=9)],
              [("epb", i % 2, float(i), bytes(p) if i % 2 == 0 else bytes(p)[14:]) for i, p in
               enumerate(mixed_packets()[:6])] + [("spb", 0, 0.0, bytes(mixed_packets()[0]))]),
    NgSection("<", [NgInterface(113)], [("opb", 0, 9.0, bytes(16) + bytes(mixed_packets()[1])[14:])])])


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["pcap", "pcapng"]), cut=st.integers(0, 2000),
       flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6))
def test_damaged_files_never_crash_the_reader(tmp_path, which, cut, flips):
    """Truncated or byte-flipped captures either read (maybe partially) or raise CaptureReadError: nothing else."""
    data = bytearray(_GOOD_PCAP if which == "pcap" else _GOOD_PCAPNG)
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    data = data[:cut] if cut < len(data) else data
    path = tmp_path / f"fuzz.{which}"
    path.write_bytes(bytes(data))
    try:
        pk = read_capture(path)
    except CaptureReadError as exc:
        assert str(path) in str(exc)
        return
    att = extract_attempts(pk)
    assert att.totals()["packets"] == len(pk) <= len(data) // 16
    assert pk.partial == bool(pk.problems)
