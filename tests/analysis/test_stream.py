"""`testbed analyse` streams a capture into (src, dst) partitions on disk: the same result as the in-memory
scan whatever the partition count, and memory that does not grow with the file."""

from __future__ import annotations

import tempfile
import tracemalloc

import pytest

from orchestrator.analysis import stream
from orchestrator.analysis.errors import CaptureReadError
from orchestrator.analysis.pcap import CaptureReader
from orchestrator.analysis.scan import scan_capture
from orchestrator.analysis.trial import analyse_trial
from tests.cli.test_analyse import trial_files
from tests.support.bulkpcap import write_capture


def test_partitions_grow_with_the_file():
    assert [stream.partitions_for(s) for s in (0, 1, 64 << 20, (64 << 20) + 1, 300 << 20)] == [1, 1, 1, 2, 5]


@pytest.mark.parametrize("spill", [stream.SPILL_FILE_BYTES, 100_000, 7_777])
def test_partitioned_analysis_equals_the_scan(tmp_path, monkeypatch, spill):
    """Bulk traffic (64 sources, ~10 % retransmitted SYNs) in 1, 80 and ~1,000 partitions: the same dict."""
    path = tmp_path / "bulk.pcap"
    counts = write_capture(path, 80_000, block=20_000)
    whole = analyse_trial(scan_capture(path)).to_dict()
    monkeypatch.setattr(stream, "SPILL_FILE_BYTES", spill)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    got = stream.stream_capture(CaptureReader(path))
    assert got.partitions == stream.partitions_for(path.stat().st_size)
    assert (got.partitions > 50) == (spill < 200_000)
    d = analyse_trial(path).to_dict()
    assert d == whole
    assert d["syn_attempts"] == counts["tcp-syn"] + counts["tcp-syn-vlan"] and d["syn_retransmissions"] > 0
    assert len(d["sources"]) == 64 and sum(s["syn_attempts"] for s in d["sources"]) == d["syn_attempts"]
    assert list((tmp_path / "tmp").iterdir()) == []                  # the partition files are gone


def test_partitioned_analysis_with_logs_and_an_offset(tmp_path, monkeypatch):
    pcap, thr, worm = trial_files(tmp_path, leak=True)
    whole = analyse_trial(scan_capture(pcap), throttle_log=thr, worm_logs=[worm], capture_offset_s=0.5).to_dict()
    assert whole["metrics"]["sources"] and whole["errors"] > 0
    monkeypatch.setattr(stream, "SPILL_FILE_BYTES", 200)
    assert analyse_trial(pcap, throttle_log=thr, worm_logs=[worm], capture_offset_s=0.5).to_dict() == whole


def test_bad_input_fails_before_any_log_is_read(tmp_path):
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"not a capture at all")
    with pytest.raises(CaptureReadError, match="not a pcap or pcapng file"):
        analyse_trial(bad, worm_logs=[tmp_path / "missing.jsonl"])
    with pytest.raises(ValueError, match="udp mode 'most'"):
        analyse_trial(bad, udp="most")


def _peak(path) -> int:
    tracemalloc.start()
    try:
        analyse_trial(path).to_dict()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_analysis_memory_does_not_grow_with_the_file(tmp_path, monkeypatch):
    """4 MiB partitions: 150,000 and 450,000 packets (~14 and ~43 MiB) peak alike (the chunk's tables and one
    partition), where keeping the attempt rows would hold three times as many in the larger."""
    monkeypatch.setattr(stream, "SPILL_FILE_BYTES", 4 << 20)
    small, large = tmp_path / "small.pcap", tmp_path / "large.pcap"
    write_capture(small, 150_000)
    write_capture(large, 450_000)
    a, b = _peak(small), _peak(large)
    assert b < 1.25 * a, (a, b)
