"""The stdlib capture reader against the testbed's NumPy reader (orchestrator.analysis) on the same files, every
link type and format it claims, and damaged files named by record and offset."""

from __future__ import annotations

import pytest

from orchestrator.analysis import extract_attempts, read_capture
from orchestrator.analysis.attempts import int_to_ip
from tests.workload import pcaps
from testworm.errors import UsageError
from workload import pcap


def ours(path):
    return [(round(p.ts, 6), p.proto, p.src, p.sport, p.dst, p.dport) for p in pcap.read_packets(str(path))
            if p.proto == "udp" or p.flags & 0x12 == 0x02]


def theirs(path):
    a = extract_attempts(read_capture(path), udp="every")
    return [(round(float(a.ts[k]), 6), "tcp" if a.proto[k] == 6 else "udp", int_to_ip(a.src[k]), int(a.sport[k]),
             int_to_ip(a.dst[k]), int(a.dport[k])) for k in range(len(a))]


@pytest.mark.parametrize("link, ng, nano", [("ether", False, False), ("ether", False, True), ("vlan", False, False),
                                            ("sll", False, False), ("raw", False, False), ("ether", True, False)])
def test_same_syns_and_datagrams_as_the_testbeds_reader(tmp_path, link, ng, nano):
    p = pcaps.write(tmp_path / "c.pcap", link=link, ng=ng, nano=nano)
    got = ours(p)
    assert got == theirs(p)
    assert len(got) == 9 and got[0] == (round(pcaps.T0, 6), "tcp", "198.18.201.1", 40000, "198.18.201.2", 80)


def test_connection_starts_drop_retransmissions_and_later_datagrams(tmp_path):
    p = pcaps.write(tmp_path / "c.pcap")
    st = pcap.connection_starts(pcap.read_packets(str(p)))
    assert [(x.src, x.dport) for x in st.starts] == [
        ("198.18.201.1", 80), ("198.18.201.1", 53), ("198.18.201.3", 50000), ("198.18.201.1", 443),
        ("198.18.201.7", 80), ("198.18.201.1", 80), ("198.18.201.1", 53)]
    assert st.retransmissions == {("tcp", "198.18.201.1", 40001, "198.18.201.4", 443): 1}


def test_damaged_captures_are_named(tmp_path):
    p = pcaps.write(tmp_path / "c.pcap")
    data = p.read_bytes()
    (tmp_path / "cut.pcap").write_bytes(data[:-10])
    with pytest.raises(UsageError, match=r"cut.pcap: record 10 at offset \d+: data cut short"):
        list(pcap.read_packets(str(tmp_path / "cut.pcap")))
    (tmp_path / "junk.pcap").write_bytes(b"hello world")
    with pytest.raises(UsageError, match=r"junk.pcap: not a pcap or pcapng capture \(first bytes 68656c6c\)"):
        list(pcap.read_packets(str(tmp_path / "junk.pcap")))
    (tmp_path / "short.pcap").write_bytes(data[:10])
    with pytest.raises(UsageError, match="the pcap file header is cut short"):
        list(pcap.read_packets(str(tmp_path / "short.pcap")))
    (tmp_path / "wifi.pcap").write_bytes(data[:20] + (105).to_bytes(4, "little") + data[24:])
    with pytest.raises(UsageError, match=r"wifi.pcap: link type 105 is not supported \(only Ethernet, raw IP"):
        list(pcap.read_packets(str(tmp_path / "wifi.pcap")))
    with pytest.raises(UsageError, match="cannot read capture .*nope.pcap: No such file"):
        list(pcap.read_packets(str(tmp_path / "nope.pcap")))
