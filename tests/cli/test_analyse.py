"""`analyse()`, the implementation behind `testbed analyse`, called directly."""

from __future__ import annotations

import io
import json

from rich.console import Console
from scapy.utils import wrpcap

from orchestrator.cli.analyse import analyse
from tests.analysis.capgen import syn
from tests.analysis.test_metrics import BLOCK_T, OFF, A, dst, host_wire, jl, throttle_events, worm_lines


def console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, color_system=None), buf


def trial_files(tmp_path, leak: bool = False):
    rows = host_wire() + ([(BLOCK_T + 1.0, 7)] if leak else [])
    pkts = []
    for t, i in rows:
        p = syn(A, dst(i), 40000 + i, 8080)
        p.time = t + OFF
        pkts.append(p)
    pcap = tmp_path / "trial.pcap"
    wrpcap(str(pcap), pkts)
    worm = tmp_path / "worm.jsonl"
    worm.write_text("\n".join(worm_lines()) + "\n")
    thr = tmp_path / "throttle.jsonl"
    thr.write_text("\n".join(jl(*throttle_events())) + "\n")
    return pcap, thr, worm


def test_json_output(tmp_path):
    pcap, thr, worm = trial_files(tmp_path)
    con, buf = console()
    assert analyse(pcap, thr, worm, True, con) == 0
    d = json.loads(buf.getvalue())
    assert {"packets", "syn_attempts", "udp_attempts", "sources", "metrics", "findings", "partial"} <= d.keys()
    assert (d["packets"], d["syn_attempts"], d["udp_attempts"], d["partial"], d["errors"]) == (3, 3, 0, False, 0)
    assert d["sources"][0]["src"] == A and d["sources"][0]["syn_attempts"] == 3
    m = d["metrics"]["sources"][0]
    assert abs(m["stopping_time_s"] - 0.601) < 1e-9 and m["wire_attempts_before_block"] == 3
    assert d["metrics"]["settings"] == {"sniffer": "after", "clock": "mono", "tolerance_s": 0.25}
    assert d["logs"]["worm"]["invalid"] == 0 and d["logs"]["throttle"]["path"] == str(thr)


def test_rich_output_shows_tables_and_leak(tmp_path):
    pcap, thr, worm = trial_files(tmp_path, leak=True)
    con, buf = console()
    assert analyse(pcap, thr, worm, False, con) == 0
    out = buf.getvalue()
    assert "Connection attempts on the wire, per source" in out and "Stopping speed per infected source" in out
    assert "wire_after_block" in out and "1 cross-check error(s)" in out and "0.601 s" in out


def test_capture_only(tmp_path):
    pcap, _thr, _worm = trial_files(tmp_path)
    con, buf = console()
    assert analyse(pcap, None, None, True, con) == 0
    d = json.loads(buf.getvalue())
    assert d["metrics"]["sources"] == [] and d["syn_attempts"] == 3


def test_partial_capture_still_prints_and_returns_0(tmp_path):
    pcap, thr, worm = trial_files(tmp_path)
    pcap.write_bytes(pcap.read_bytes()[:-5])
    con, buf = console()
    assert analyse(pcap, thr, worm, True, con) == 0
    d = json.loads(buf.getvalue())
    assert d["partial"] and "file ends in the middle of packet 3" in d["partial_reasons"][0]
    assert any(f["code"] == "capture_partial" for f in d["findings"])
    con, buf = console()
    analyse(pcap, thr, worm, False, con)
    assert "PARTIAL: file ends in the middle of packet 3" in buf.getvalue()


def test_unreadable_inputs_return_2(tmp_path):
    pcap, thr, worm = trial_files(tmp_path)
    con, buf = console()
    assert analyse(tmp_path / "missing.pcap", thr, worm, False, con) == 2
    assert f"error: {tmp_path / 'missing.pcap'}: no such file" in buf.getvalue()
    con, buf = console()
    assert analyse(pcap, tmp_path / "missing.jsonl", worm, True, con) == 2
    assert json.loads(buf.getvalue()) == {"error": f"{tmp_path / 'missing.jsonl'}: no such file", "hint": None,
                                          "exit_code": 2}
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    con, buf = console()
    assert analyse(empty, None, None, False, con) == 2
    assert "empty file (0 bytes)" in buf.getvalue()
