"""`--parallel` on a lab file that lists several hypervisors (`libvirt: {uris: [...]}`, issue 18 §3), on the
fake lab (tests/support/fakes.py) standing in for the libvirt provider: lab instance k is built on uris[k mod n]
(its record says so, and `down` of it goes there), the manifest, trial records, progress lines and report say
the placement, the default K is one instance per hypervisor, and a lost hypervisor's trials go to the others
with the manifest naming the hypervisor and why. No root, no libvirt: the real provider on libvirt's test
driver is tests/providers/libvirt/test_testdriver.py."""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import providers
from orchestrator.cli.progress import SweepBar
from orchestrator.errors import ProviderError, UsageError
from orchestrator.experiment import pool, runner
from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.runner import RunOptions, run_experiment
from orchestrator.experiment.spec import load_experiment
from orchestrator.lab import lifecycle
from orchestrator.labfile import hypervisors
from orchestrator.providers.state import LabRecord
from orchestrator.results.report import placement_note
from tests.experiment.test_trial_fake import experiment_file
from tests.support.fakes import FakeHosts, FakeProvider

LABS = Path(__file__).resolve().parents[2] / "labs"
URIS = ["qemu:///system", "qemu+ssh://root@hv2:2222/system?keyfile=/k/id&known_hosts=/k/kh", "test:///default"]
HV2 = "qemu+ssh://root@hv2:2222/system"          # as progress lines, the manifest's lost lines and reports show it


class PlacedProvider(FakeProvider):
    """The fake provider as the libvirt one: it builds on the lab's options' uri and keeps it in its record
    (extra.uri, as LibvirtProvider does); a hypervisor in `DEAD` does not answer."""

    name = "libvirt"
    SEEN: dict = {}
    DEAD: set[str] = set()

    def create(self, lab, progress=None) -> None:
        uri = lab.options["uri"]
        if uri in self.DEAD:
            raise ProviderError(f"the hypervisor at {uri} does not answer (Connection refused)")
        with self.store.locked(lab.name):
            self.refuse_existing(lab.name)
            rec = LabRecord(lab.name, "libvirt", "creating", lab.to_dict(), extra={"uri": uri})
            self.store.journal(rec, "process", [f"fake-{h.name}" for h in lab.hosts])
            rec.state = "up"
            self.store.save(rec)
        with self.SEEN["lock"]:
            self.SEEN["up"][lab.name] = uri

    def _teardown(self, rec, progress):
        with self.SEEN["lock"]:
            self.SEEN["down"][rec.name] = rec.extra["uri"]
        return super()._teardown(rec, progress)


@pytest.fixture
def placed(tmp_path, store, monkeypatch):
    """A libvirt lab file listing the three URIS, its experiment (3 rates × 2 repeats), and lab sessions that
    build through runner.build_lab (what lab_session does) on PlacedProvider."""
    monkeypatch.setitem(providers._REGISTRY, "libvirt", f"{__name__}:PlacedProvider")
    monkeypatch.setattr(PlacedProvider, "SEEN", {"up": {}, "down": {}, "lock": threading.Lock()})
    monkeypatch.setattr(PlacedProvider, "DEAD", set())
    text = (LABS / "stopping-speed.yaml").read_text().replace("name: stopping-speed", "name: hv")
    text = text.replace("provider: netns", f"provider: libvirt\nlibvirt: {{uris: {URIS!r}}}")
    lab = tmp_path / "lab.yaml"
    lab.write_text(text)

    @contextmanager
    def session(exp, store, *, keep=False, console=None):
        built = runner.build_lab(exp, store)
        try:
            prov, _ = lifecycle.provider_for(built.name, store)
            yield FakeHosts(built, tmp_path / "hosts" / built.name, prov, attempts=8)
        finally:
            lifecycle.down(built.name, store=store)
    return {"exp": experiment_file(tmp_path, lab=str(lab), rates=[100, 500, 1000], repeats=2), "session": session,
            "seen": PlacedProvider.SEEN}


class _Console:
    def __init__(self):
        self.lines: list[str] = []

    def print(self, text, highlight=False):
        self.lines.append(text)


def _run(tmp_path, store, placed, k, **over):
    con, buf = _Console(), io.StringIO()
    bars = Console(file=buf, width=300, color_system=None)
    rdir = run_experiment(placed["exp"], RunOptions(
        out=tmp_path / "r", store=store, lab=placed["session"], parallel=k, console=con,
        progress=lambda total, done, est: SweepBar(total, done, est, console=bars), **over))
    run = RunDir(rdir.path)
    return run.manifest(), run.trials(), con.lines, buf.getvalue().splitlines()


def test_three_instances_on_three_hypervisors_each_built_recorded_and_taken_down_on_its_own(tmp_path, store, placed):
    man, trials, said, lines = _run(tmp_path, store, placed, 3)
    want = {"hv": URIS[0], "hv-2": URIS[1], "hv-3": URIS[2]}
    assert placed["seen"]["up"] == want and placed["seen"]["down"] == want      # down went where up built
    assert man["status"] == "complete" and man["trials"] == 6 and store.names() == []
    assert man["parallel"] == {"instances": 3, "labs": ["hv", "hv-2", "hv-3"], "hypervisors": want}
    assert all(t["hypervisor"] == want[t["lab_instance"]] for t in trials)
    assert said[0] == (f"3 lab instances on 3 hypervisor(s): qemu:///system: hv; {HV2}: hv-2; test:///default: hv-3")
    trial_lines = [ln for ln in lines if ln.startswith("trial ")]
    assert len(trial_lines) == 6 and all(" at " in ln for ln in trial_lines)
    on_hv2 = [ln for ln in trial_lines if " on hv-2 at " in ln]
    assert on_hv2 and all(f" on hv-2 at {HV2};" in ln or f" on hv-2 at {HV2}," in ln for ln in on_hv2), on_hv2
    ran = {u: sum(t["hypervisor"] == want[n] for t in trials) for n, u in want.items()}
    assert placement_note(man, trials) == (
        f"Placement: 3 lab instances on 3 hypervisor(s) — qemu:///system: hv, {ran[URIS[0]]} trial(s); "
        f"{HV2}: hv-2, {ran[URIS[1]]} trial(s); test:///default: hv-3, {ran[URIS[2]]} trial(s).")


def test_five_instances_on_three_hypervisors_wrap_round_and_say_so(tmp_path, store, placed):
    man, trials, said, _ = _run(tmp_path, store, placed, 5)
    want = {"hv": URIS[0], "hv-2": URIS[1], "hv-3": URIS[2], "hv-4": URIS[0], "hv-5": URIS[1]}
    assert placed["seen"]["up"] == want and man["parallel"]["hypervisors"] == want
    assert said[0] == ("5 lab instances on 3 hypervisor(s) (more instances than hypervisors: several on one): "
                       f"qemu:///system: hv, hv-4; {HV2}: hv-2, hv-5; test:///default: hv-3")
    assert all(t["hypervisor"] == want[t["lab_instance"]] for t in trials) and len(trials) == 6


def test_a_lost_hypervisor_leaves_its_trials_to_the_others_and_the_manifest_names_it(tmp_path, store, placed):
    PlacedProvider.DEAD.add(URIS[1])
    man, trials, _, _ = _run(tmp_path, store, placed, 3)
    assert man["status"] == "complete" and len(trials) == 6 and store.names() == []
    assert {t["hypervisor"] for t in trials} <= {URIS[0], URIS[2]} and "hv-2" not in placed["seen"]["up"]
    assert man["parallel"]["lost"] == [f"hv-2 on {HV2}: the hypervisor at {URIS[1]} does not answer "
                                       "(Connection refused)"]
    note = placement_note(man, trials)
    assert f"{HV2}: hv-2, 0 trial(s)" in note
    assert note.endswith(f"Lost lab instance(s), whose trials the others ran: {man['parallel']['lost'][0]}.")


def test_the_default_is_one_instance_per_hypervisor(tmp_path, store, placed):
    exp = load_experiment(placed["exp"], machine_routes=[])
    assert pool.default_parallel(exp, 60) == 3 and pool.default_parallel(exp, 2) == 2
    man, _, _, _ = _run(tmp_path, store, placed, None)
    assert man["parallel"]["instances"] == 3 and set(placed["seen"]["up"].values()) == set(URIS)
    one = load_experiment(experiment_file(tmp_path, lab=str(LABS / "vm-stopping-speed.yaml")), machine_routes=[])
    assert pool.default_parallel(one, 60) == 1                      # one `uri`: one VM lab unless asked for more


def test_a_serial_run_builds_on_the_first_and_the_report_says_where(tmp_path, store, placed):
    man, trials, _, _ = _run(tmp_path, store, placed, 1)
    assert placed["seen"]["up"] == {"hv": URIS[0]} and "parallel" not in man
    assert placement_note(man, trials) == "Placement: every trial on qemu:///system (lab hv)."


def test_a_lab_is_built_only_on_a_hypervisor_its_file_lists(tmp_path, store, placed):
    lab = load_experiment(placed["exp"], machine_routes=[]).lab
    assert hypervisors.on(lab, URIS[2]).options["uri"] == URIS[2] and hypervisors.on(lab, None) is lab
    with pytest.raises(UsageError) as e:
        hypervisors.on(lab, "qemu+ssh://hv9/system?keyfile=/x")
    assert e.value.message == (f"qemu+ssh://hv9/system is not a hypervisor of lab hv; its lab file lists "
                               f"qemu:///system, {HV2}, test:///default")
    netns = load_experiment(experiment_file(tmp_path), machine_routes=[]).lab
    with pytest.raises(UsageError, match="stopping-speed is a netns lab: only a libvirt lab is built on a hyp"):
        hypervisors.on(netns, "qemu:///system")
    assert placement_note({"lab": netns.to_dict()}, []) == ""


def test_up_on_a_hypervisor_the_file_does_not_list_is_exit_2_and_builds_nothing(tmp_path):
    from tests.cli.test_common import cli
    res = cli("up", str(LABS / "vm-stopping-speed.yaml"), "--hypervisor", "qemu+ssh://hv9/system",
              state=tmp_path / "state")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert ("error: qemu+ssh://hv9/system is not a hypervisor of lab vm-stopping-speed; its lab file lists "
            "qemu:///system") in res.stderr
    assert not (tmp_path / "state" / "labs").exists()
