"""Trace replay: CSV and pcap traces onto the lab's servers; every bad input a clear error with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workload import pcaps
from testworm.errors import UsageError
from workload import trace
from workload.schedule import GenSpec, generate, to_csv

DATA = Path(__file__).parent / "data"
SERVERS = ("198.18.201.2", "198.18.201.3", "198.18.201.4", "198.18.201.5")


def test_the_shipped_trace_maps_onto_the_servers():
    s = trace.load(str(DATA / "trace.csv"), SERVERS)
    assert [(c.t, c.server, c.addr, c.protocol, c.port) for c in s[:5]] == [
        (0.0, 0, SERVERS[0], "tcp", 8080), (0.05, 1, SERVERS[1], "tcp", 8080), (0.05, 0, SERVERS[0], "udp", 5353),
        (0.2, 2, SERVERS[2], "tcp", 8080), (0.35, 1, SERVERS[1], "udp", 5353)]
    assert len(s) == 10 and [c.i for c in s] == list(range(10)) and [c.page for c in s] == list(range(10))
    assert trace.load(str(DATA / "trace.csv"), SERVERS) == s  # replayed twice: the same destinations


def test_lab_ports_replace_the_traces_and_empty_ports_take_them():
    s = trace.load(str(DATA / "trace.csv"), SERVERS, ports="lab", tcp_port=9000, udp_port=9053)
    assert {(c.protocol, c.port) for c in s} == {("tcp", 9000), ("udp", 9053)}


def test_a_generated_schedule_round_trips_through_csv(tmp_path):
    g = generate(GenSpec(servers=SERVERS, rate=20.0, duration_s=3.0, burst=2, udp_fraction=0.3, seed=4))
    (tmp_path / "t.csv").write_text(to_csv(g))
    r = trace.load(str(tmp_path / "t.csv"), SERVERS)
    assert [(c.t, c.server, c.protocol, c.port) for c in r] == [(c.t, c.server, c.protocol, c.port) for c in g]


@pytest.mark.parametrize("body, message", [
    ("0.1,0,tcp", "t.csv line 2: expected 4 fields (time,destination,protocol,port), found 3: '0.1,0,tcp'"),
    ("x,0,tcp,80", "t.csv line 2: time 'x' is not a number"),
    ("-1,0,tcp,80", "t.csv line 2: time -1 out of range (0 … 3600 s)"),
    ("nan,0,tcp,80", "t.csv line 2: time nan out of range (0 … 3600 s)"),
    ("0.5,0,tcp,80\n0.4,0,tcp,80", "t.csv line 3: time 0.4 is before the previous line's 0.5 (times must not decrease)"),
    ("0,-1,tcp,80", "t.csv line 2: destination '-1' is not an index (0, 1, 2 …)"),
    ("0,0,icmp,80", "t.csv line 2: protocol 'icmp': expected tcp or udp"),
    ("0,0,tcp,70000", "t.csv line 2: port '70000' is not 1 … 65535"),
    ("0,0,tcp,80\n\n# c\n0,9,tcp,80", "t.csv line 5: destination 9, but only 4 server(s) (0 … 3); give more --servers or --wrap"),
    ("# nothing", "t.csv: no connections in the trace"),
])
def test_bad_csv_lines_are_named(tmp_path, body, message):
    p = tmp_path / "t.csv"
    p.write_text("time,destination,protocol,port\n" + body + "\n")
    with pytest.raises(UsageError) as e:
        trace.load(str(p), SERVERS)
    assert str(e.value) == f"{p} {message[6:]}" if message.startswith("t.csv ") else f"{p}{message[5:]}"


def test_wrap_maps_destination_k_to_server_k_mod_n(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("0,5,tcp,80\n0,9,udp,53\n")
    assert [c.server for c in trace.load(str(p), SERVERS, wrap=True)] == [1, 1]


def test_unreadable_and_non_utf8_traces(tmp_path):
    with pytest.raises(UsageError, match="cannot read trace .*/missing.csv: No such file or directory"):
        trace.load(str(tmp_path / "missing.csv"), SERVERS)
    (tmp_path / "b.csv").write_bytes(b"0,0,tcp,80\n\xff\n")
    with pytest.raises(UsageError, match=r"b.csv is not UTF-8 text \(offset 11\)"):
        trace.load(str(tmp_path / "b.csv"), SERVERS)


def test_pcap_connection_starts_of_one_source(tmp_path):
    p = pcaps.write(tmp_path / "t.pcap")
    s = trace.load(str(p), SERVERS, source="198.18.201.1")
    # starts of .1: SYN→.2:80, UDP→.3:53, SYN→.4:443 (its retransmission dropped), SYN→.2:80, UDP→.3:53 (new flow)
    assert [(round(c.t, 6), c.server, c.protocol, c.port) for c in s] == [
        (0.0, 0, "tcp", 80), (0.1, 1, "udp", 53), (0.2, 2, "tcp", 443), (1.5, 0, "tcp", 80), (1.7, 1, "udp", 53)]
    assert trace.load(str(p), SERVERS, source="198.18.201.1") == s
    assert [c.addr for c in trace.load(str(p), SERVERS, source="198.18.201.7")] == [SERVERS[0]]


def test_pcap_with_several_sources_needs_one_chosen(tmp_path):
    p = pcaps.write(tmp_path / "t.pcap")
    with pytest.raises(UsageError) as e:
        trace.load(str(p), SERVERS)
    # the DNS-like answer from .3 is a UDP flow of its own, so .3 counts as a source too
    assert str(e.value) == (f"{p}: connection starts from 3 sources (198.18.201.1, 198.18.201.3, 198.18.201.7): "
                            "choose one with --trace-source")
    with pytest.raises(UsageError, match="no connection starts from 198.18.201.9"):
        trace.load(str(p), SERVERS, source="198.18.201.9")
    with pytest.raises(UsageError, match=r"connection start 2: destination 2, but only 2 server\(s\)"):
        trace.load(str(p), SERVERS[:2], source="198.18.201.1")
