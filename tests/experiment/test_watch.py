"""The watch over a trial's processes, without root: places are directories on this machine, probed with the
same shell scripts a lab host runs; the wait loop and the stop verdicts over fake places."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.errors import ProcessDied
from orchestrator.experiment.trial import FAIL_CLOSED_NOTE, stop_all, wait_stop
from orchestrator.experiment.watch import Death, Watch, describe, logged_child, service, stop_verdict
from orchestrator.localrun import run


class Place:
    """A host whose files are a directory here: scripts run in a local shell; stop answers are given."""

    def __init__(self, label: str, root: Path, stopped: list):
        self.label, self.root = label, root
        self.scripts: list[str] = []
        self.stops: dict[str, dict] = {}
        self.stopped = stopped          # (place, service), in the order stopped, shared by every place

    def sh(self, script, timeout=60.0):
        self.scripts.append(script)
        return run(["sh", "-c", script], timeout=timeout)

    def stop(self, name, *, signal="TERM", timeout=10.0):
        self.stopped.append((self.label, name))
        return self.stops.get(name, {"name": name, "stopped": True, "signal": f"SIG{signal}", "exit": 0})

    def ended(self, name: str, status: int, log: str = "") -> None:
        """What the host agent's watcher leaves when a service ends."""
        svc = self.root / "run" / "svc"
        svc.mkdir(parents=True, exist_ok=True)
        (svc / f"{name}.exit").write_text(f"{status}\n")
        if log:
            (self.root / "log").mkdir(exist_ok=True)
            (self.root / "log" / f"{name}.log").write_text(log)


@pytest.fixture
def places(tmp_path):
    stopped: list = []
    return {n: Place(n, tmp_path / n, stopped) for n in ("blade", "target1", "target2", "sniffer")}


def watch_of(places, clock=None) -> Watch:
    w = Watch(places, **({"clock": clock} if clock else {}))
    for n, p in places.items():
        w.add(service(n, str(p.root), "worm-server", "the worm server"))
    return w


def test_running_services_are_not_deaths_and_a_killed_one_says_how_with_its_log(places):
    w = watch_of(places)
    assert w.poll(everywhere=True) == ([], {n: {} for n in places})
    log = "".join(f"line {i}\n" for i in range(1, 9))
    places["target1"].ended("worm-server", -9, log=log)
    deaths, _ = w.poll(everywhere=True)
    assert [d.reason for d in deaths] == [
        "the worm server on target1 was killed by SIGKILL mid-trial; its log ends: line 4 | line 5 | line 6 | "
        "line 7 | line 8"]
    assert deaths[0].to_dict() == {"what": "the worm server", "place": "target1", "service": "worm-server",
                                   "status": -9, "signal": "SIGKILL", "how": "was killed by SIGKILL",
                                   "when": "mid-trial", "log_tail": ["line 4", "line 5", "line 6", "line 7", "line 8"]}


def test_a_service_that_exits_by_itself_is_a_death_whatever_its_status(places):
    w = watch_of(places)
    places["blade"].ended("worm-server", 0)
    places["sniffer"].ended("worm-server", 3)
    deaths, _ = w.poll(everywhere=True)
    assert sorted(d.reason for d in deaths) == [
        "the worm server on blade exited with status 0 mid-trial; its log is empty",
        "the worm server on sniffer exited with status 3 mid-trial; its log is empty"]


def test_a_logged_child_ends_by_itself_with_status_0_but_not_otherwise(places, tmp_path):
    worm = tmp_path / "worm"
    worm.mkdir()
    events = worm / "server.jsonl"
    w = Watch(places)
    scanner = w.add(logged_child("blade", "the worm's scanner", events=str(events), exit_event="scan_exit",
                                 log=f"{worm}/scan-*.stderr"))
    assert w.poll(everywhere=True)[0] == []                                      # no log yet: still starting
    events.write_text(json.dumps({"event": "scan_start", "pid": 7}, separators=(", ", ": ")) + "\n")
    assert w.poll(everywhere=True)[0] == []
    with events.open("a") as fh:
        fh.write(json.dumps({"event": "scan_exit", "pid": 7, "returncode": 0, "error": None},
                            separators=(", ", ": ")) + "\n")
    assert w.poll(everywhere=True)[0] == []                                      # it ran its course
    with events.open("a") as fh:
        fh.write(json.dumps({"event": "scan_exit", "pid": 8, "returncode": -15, "error": "exit -15"}) + "\n")
    (worm / "scan-001.stderr").write_text("Traceback: …\nKeyboardInterrupt\n")
    deaths, _ = w.poll(everywhere=True)
    assert [(d.watched, d.status, d.reason) for d in deaths] == [
        (scanner, -15, "the worm's scanner on blade was killed by SIGTERM mid-trial; its log ends: Traceback: … | "
                       "KeyboardInterrupt")]


def test_the_callers_snippets_ride_in_the_same_round_trip_and_others_are_asked_in_turn(places):
    now = [100.0]
    w = watch_of(places, clock=lambda: now[0])

    def asked(extra=None, **kw):
        for p in places.values():
            p.scripts.clear()
        out = w.poll(extra or {}, **kw)
        assert all(len(p.scripts) <= 1 for p in places.values())          # one round trip per place
        return [n for n, p in places.items() if p.scripts], out
    names, (deaths, out) = asked({"blade": {"scan": "echo last-line", "blocked": "echo blocked"}})
    assert deaths == [] and out["blade"] == {"scan": "last-line", "blocked": "blocked"}
    assert names == ["blade", "target1"]                   # the stop condition's place, and one other
    now[0] += 0.5
    assert asked({"blade": {"scan": "true"}})[0] == ["blade"]               # the others: at most once a second
    now[0] += 0.6
    assert asked({"blade": {"scan": "true"}})[0] == ["blade", "target2"]    # the next in turn
    now[0] += 1.0
    assert asked({"blade": {"scan": "true"}})[0] == ["blade", "sniffer"]
    assert asked(everywhere=True)[0] == list(places)


def test_how_a_process_ended():
    assert describe(-9) == "was killed by SIGKILL" and describe(-11) == "was killed by SIGSEGV"
    assert describe(2) == "exited with status 2" and describe(-99) == "was killed by signal 99"
    assert describe(None).startswith("ended without an exit status")


def test_stop_verdicts():
    thr = service("blade", "/p", "throttle", "the throttle daemon", note=FAIL_CLOSED_NOTE)
    scan = logged_child("blade", "the worm's scanner", events="/e", exit_event="scan_exit", log="/l")
    assert stop_verdict(thr, {"stopped": True, "signal": "SIGTERM", "exit": 0}) is None
    assert stop_verdict(thr, {"stopped": True, "signal": "SIGTERM", "exit": None}) is None   # not yet recorded
    d = stop_verdict(thr, {"running": False, "exit": -9})
    assert d.reason == ("the throttle daemon on blade was killed by SIGKILL before the trial stopped it (it ran "
                        "fail-closed: from then on its rules dropped new connections instead of passing them); its "
                        "log is empty")
    assert stop_verdict(thr, {"stopped": True, "exit": 1}).reason.startswith(
        "the throttle daemon on blade exited with status 1 when the trial stopped it")
    forced = stop_verdict(thr, {"stopped": True, "forced": True, "error": "did not exit within 10.0 s of SIGTERM"})
    assert forced.how == "did not stop (did not exit within 10.0 s of SIGTERM) and had to be killed"
    assert stop_verdict(thr, {"running": False, "exit": None}).how.startswith("ended without an exit status")
    assert stop_verdict(scan, {"running": False, "exit": 0}) is None
    assert stop_verdict(scan, {"running": False, "exit": 2}).how == "exited with status 2"


def setup_for(places, tmp_path, *, throttle="blade"):
    return SimpleNamespace(stop=threading.Event(), infected="blade", throttle=SimpleNamespace(label=throttle))


def scan_dir(tmp_path, *lines) -> Path:
    d = tmp_path / "worm"
    d.mkdir(exist_ok=True)
    (d / "scan-001-gen0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def scanner_of(w, d):
    return w.add(logged_child("blade", "the worm's scanner", events=f"{d}/server.jsonl", exit_event="scan_exit",
                              log=f"{d}/scan-*.stderr"))


def test_wait_stop_ends_on_the_worms_bounds_and_looks_everywhere_once_more(places, tmp_path, monkeypatch):
    monkeypatch.setattr("orchestrator.experiment.trial.POLL_S", 0.01)
    d = scan_dir(tmp_path, {"event": "start"}, {"event": "stop", "reason": "targets_exhausted"})
    w = watch_of(places)
    st = setup_for(places, tmp_path)
    assert wait_stop(st, w, scanner_of(w, d), None, str(d), 5) == ("ok", "worm stopped: targets_exhausted")
    assert all(p.scripts for p in places.values())               # the last look asked every place


def test_wait_stop_a_death_is_an_error_even_beside_a_block(places, tmp_path):
    d = scan_dir(tmp_path, {"event": "start"})
    tlog = tmp_path / "throttle.jsonl"
    tlog.write_text('{"event":"config"}\n{"event":"blocked","src":"198.18.8.2"}\n')
    w = watch_of(places)
    w.add(service("blade", str(places["blade"].root), "throttle", "the throttle daemon", note=FAIL_CLOSED_NOTE))
    places["blade"].ended("throttle", -9)
    with pytest.raises(ProcessDied) as exc:
        wait_stop(setup_for(places, tmp_path), w, scanner_of(w, d), str(tlog), str(d), 5)
    assert exc.value.message.startswith("the throttle daemon on blade was killed by SIGKILL mid-trial (it ran "
                                        "fail-closed")
    assert [x.watched.service for x in exc.value.deaths] == ["throttle"]


def test_wait_stop_blocked_then_a_death_in_the_last_look(places, tmp_path):
    d = scan_dir(tmp_path, {"event": "start"})
    tlog = tmp_path / "throttle.jsonl"
    tlog.write_text('{"event":"blocked"}\n')
    w = watch_of(places)
    blade, sh = places["blade"], places["blade"].sh

    def the_sniffers_server_dies_after_the_first_poll(script, timeout=60.0):
        res = sh(script, timeout)
        places["sniffer"].ended("worm-server", -6)
        return res
    blade.sh = the_sniffers_server_dies_after_the_first_poll
    with pytest.raises(ProcessDied, match="the worm server on sniffer was killed by SIGABRT mid-trial"):
        wait_stop(setup_for(places, tmp_path), w, scanner_of(w, d), str(tlog), str(d), 5)
    assert len(places["sniffer"].scripts) == 2      # not asked by the first poll: the last look, the log's tail


@pytest.mark.parametrize("reason, error, how", [
    ("signal", None, "stopped with reason 'signal', not at its own bounds"),
    ("error", "OSError: [Errno 24] Too many open files",
     "stopped with reason 'error' (OSError: [Errno 24] Too many open files), not at its own bounds"),
])
def test_wait_stop_a_scanner_stopped_by_anything_but_its_bounds_is_an_error(places, tmp_path, reason, error, how):
    d = scan_dir(tmp_path, {"event": "start"}, {"event": "stop", "reason": reason, "error": error})
    w = watch_of(places)
    with pytest.raises(ProcessDied) as exc:
        wait_stop(setup_for(places, tmp_path), w, scanner_of(w, d), None, str(d), 5)
    assert exc.value.deaths[0].how == how
    assert exc.value.message.startswith(f"the worm's scanner on blade {how} mid-trial")


def test_wait_stop_times_out_and_is_interrupted(places, tmp_path, monkeypatch):
    monkeypatch.setattr("orchestrator.experiment.trial.POLL_S", 0.01)
    d = scan_dir(tmp_path, {"event": "start"})
    w = watch_of(places)
    st = setup_for(places, tmp_path)
    assert wait_stop(st, w, scanner_of(w, d), None, str(d), 0.05) == ("timeout", "still scanning after 0.05 s")
    st.stop.set()
    assert wait_stop(st, w, scanner_of(w, d), None, str(d), 5) == ("interrupted", "the run was interrupted")


def test_stop_all_stops_the_worm_first_and_reports_what_had_died(places, tmp_path):
    w = watch_of(places)
    thr = w.add(service("blade", "/p", "throttle", "the throttle daemon"))
    w.add(service("sniffer", "/p", "capture", "tcpdump (the capture)"))
    places["target2"].stops["worm-server"] = {"running": False, "exit": -9}
    places["blade"].stops["throttle"] = {"running": False, "exit": -9}
    known = [Death(thr, -9, "mid-trial")]
    deaths = stop_all(w, known=known)
    assert [d.reason for d in deaths] == [
        "the worm server on target2 was killed by SIGKILL before the trial stopped it; its log is empty"]
    order = places["blade"].stopped
    assert order[-1] == ("blade", "throttle") and ("sniffer", "capture") not in order    # the capture: its own stop
    assert sorted(order[:-1]) == sorted((n, "worm-server") for n in places)


def _released(due: float, late: float) -> str:
    return (f'{{"event":"released","t_mono":{due + late!r},"t_wall":1.0,"src":"198.18.8.2","dst":"198.18.9.1",'
            f'"sport":1,"dport":8080,"proto":"tcp","queue_len":0,"reason":"head","due_mono":{due!r}}}\n')


def test_wait_stop_ends_a_try_at_once_when_the_throttle_releases_late_while_the_worm_scans(places, tmp_path,
                                                                                             monkeypatch):
    monkeypatch.setattr("orchestrator.experiment.trial.POLL_S", 0.01)
    d = scan_dir(tmp_path, {"event": "start"})
    tlog = tmp_path / "throttle.jsonl"
    tlog.write_text('{"event":"config"}\n' + _released(50.0, 0.004) + _released(51.0, 0.0431) + _released(52.0, 0.001))
    w = watch_of(places)
    st = setup_for(places, tmp_path)
    st.abort_late_s = 0.02
    assert wait_stop(st, w, scanner_of(w, d), str(tlog), str(d), 5) == (
        "ok", "disturbed: the throttle released 43.1 ms late while the worm scanned (tolerance 20 ms); "
              "ended at once, to be redone")
    st.abort_late_s = 0.05                                          # within it: the try goes on to its end
    assert wait_stop(st, w, scanner_of(w, d), str(tlog), str(d), 0.1) == ("timeout", "not blocked within 0.1 s")
    del st.abort_late_s                                             # the last try: its lateness is not read
    places["blade"].scripts.clear()
    assert wait_stop(st, w, scanner_of(w, d), str(tlog), str(d), 0.05)[0] == "timeout"
    assert not any("awk" in s for s in places["blade"].scripts)


def test_wait_stop_a_late_release_after_the_worm_stopped_does_not_end_it_early(places, tmp_path, monkeypatch):
    monkeypatch.setattr("orchestrator.experiment.trial.POLL_S", 0.01)
    d = scan_dir(tmp_path, {"event": "start"}, {"event": "stop", "reason": "lifetime"})
    tlog = tmp_path / "throttle.jsonl"
    tlog.write_text(_released(51.0, 0.2))
    w = watch_of(places)
    st = setup_for(places, tmp_path)
    st.abort_late_s = 0.02
    assert wait_stop(st, w, scanner_of(w, d), str(tlog), str(d), 5) == ("ok", "worm stopped: lifetime")
