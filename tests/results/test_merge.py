"""`--shard I/N` and `testbed results merge` on the fake lab (tests/support/fakes.py): two shards merged equal
the whole run (trials, summary.csv, report, index entry); shards of different sweeps, missing and doubled
trials are refused with exit 2 and a message that names them."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.experiment.rundir import ResultsError, RunDir
from orchestrator.experiment.runner import RunOptions, run_experiment
from orchestrator.results.index import Index
from orchestrator.results.merge import merge
from orchestrator.results.publish import Publisher
from tests.experiment.test_runner_fake import fake  # noqa: F401  (the fixture)
from tests.experiment.test_trial_fake import experiment_file

RATES = [100, 500, 1000]           # expected 7, 6 and 4 s a trial: the shards are not the plan cut in two


def _run(tmp_path, store, fake, out, **kw):  # noqa: F811
    return run_experiment(experiment_file(tmp_path, rates=RATES, repeats=2),
                          RunOptions(out=tmp_path / out, store=store, lab=fake["session"], **kw))


@pytest.fixture
def shards(tmp_path, store, fake):  # noqa: F811
    return [_run(tmp_path, store, fake, f"shard-{i}", shard=(i, 2)) for i in (1, 2)]


def _rows(run: RunDir):
    """A trial's record less what the wall clock of the fake's run decides (when, how long, the wire's rate)."""
    keep = ("trial", "index", "mechanism", "protocol", "rate", "repeat", "state", "status", "reason", "files",
            "agreement", "model", "findings")
    return [{k: t.get(k) for k in keep} | {"measured": {k: v for k, v in t["measured"].items()
                                                        if not isinstance(v, float) or k == "stop_s"}}
            for t in run.trials()]


def _report(run: RunDir) -> str:
    md = (run.path / "report.md").read_text()
    # the machine's load (the Load note) is measured per trial: shards and a whole run differ in it
    return re.sub(r"(run id|started|finished|duration|wall|argv|host|pid|- Load:)[^\n]*", "", md, flags=re.I)


def test_two_shards_merged_equal_the_whole_run(tmp_path, store, fake, shards):  # noqa: F811
    whole = _run(tmp_path, store, fake, "whole")
    a, b = (RunDir(s.path) for s in shards)
    ids_a, ids_b = [t["trial"] for t in a.trials()], [t["trial"] for t in b.trials()]
    assert sorted(ids_a + ids_b) == sorted(t["trial"] for t in whole.trials()) and not set(ids_a) & set(ids_b)
    assert a.manifest()["spec_hash"] == b.manifest()["spec_hash"] == whole.manifest()["spec_hash"]
    assert a.manifest()["shard"]["trials"] == ids_a and a.manifest()["shard"]["count"] == 2
    # the same seed for a trial whichever shard runs it: seed + plan index
    assert {t["trial"]: t["index"] for t in a.trials() + b.trials()} == {t["trial"]: t["index"] for t in whole.trials()}

    merged = merge([b.path, a.path], tmp_path / "merged")              # in any order
    assert _rows(merged) == _rows(whole)
    assert (merged.path / "summary.csv").read_text() == (whole.path / "summary.csv").read_text()
    assert all((merged.path / f).is_file() for t in merged.trials() for f in t["files"].values())
    man = merged.manifest()
    assert (man["status"], man["trials"], man["planned"]) == ("complete", 6, 6) and "shard" not in man
    assert [s["shard"] for s in man["merged"]["shards"]] == ["1/2", "2/2"]

    pub = Publisher(tmp_path / "index.sqlite")
    pub.finished(merged)
    pub.finished(whole)
    assert _report(merged) == _report(whole)
    idx = Index(tmp_path / "index.sqlite")
    rows = {r["run_id"]: r for r in idx.runs()}
    keep = ("experiment", "kind", "status", "spec_hash", "lab_hash", "git_commit", "seed", "trials", "ok")
    assert {k: rows[man["run_id"]].get(k) for k in keep} == {k: rows[whole.manifest()["run_id"]].get(k) for k in keep}
    summ = [[r[1:] for r in idx.db.execute("SELECT * FROM summary WHERE run_id=? ORDER BY protocol, rate", (rid,))]
            for rid in (man["run_id"], whole.manifest()["run_id"])]
    idx.close()
    assert summ[0] == summ[1] and len(summ[0]) == 3


def test_a_missing_shard_is_refused_naming_its_trials(tmp_path, shards):
    with pytest.raises(ResultsError) as e:
        merge([shards[0].path], tmp_path / "m")
    missing = RunDir(shards[1].path).manifest()["shard"]["trials"]
    assert e.value.exit_code == 2
    assert f"{len(missing)} of 6 trial(s) missing (shard 2/2 not given): {', '.join(missing)}" in e.value.message
    assert not (tmp_path / "m").exists()


def test_a_trial_a_shard_did_not_finish_is_missing(tmp_path, shards):
    b = RunDir(shards[1].path)
    b.write_trials(b.trials()[1:])
    gone = RunDir(shards[1].path).manifest()["shard"]["trials"][0]
    with pytest.raises(ResultsError, match=rf"1 of 6 trial\(s\) missing: {gone}$"):
        merge([shards[0].path, b.path], tmp_path / "m")


def test_a_shard_given_twice_is_refused_naming_the_doubled_trials(tmp_path, shards):
    a = shards[0].path
    with pytest.raises(ResultsError) as e:
        merge([a, a, shards[1].path], tmp_path / "m")
    first = RunDir(a).trials()[0]["trial"]
    assert f"trial(s) doubled: {first} (in {a}, {a})" in e.value.message


@pytest.mark.parametrize(("key", "value", "what"), [
    ("spec_hash", "other", "experiment file"),
    ("lab", {"spec_hash": "other"}, "lab file"),
    ("git", {"commit": "0123456789abcdef", "dirty": False}, "code version (git commit)"),
    ("plan", {"rates": [1], "repeats": 2}, "plan (rates, repeats)"),
])
def test_shards_of_different_sweeps_are_refused(tmp_path, shards, key, value, what):
    b = RunDir(shards[1].path)
    man = b.manifest()
    man[key] = value if not isinstance(value, dict) else {**(man.get(key) or {}), **value}
    b.write_manifest(man)
    with pytest.raises(ResultsError, match=f"cannot merge shards of different sweeps: {b.path} is of another "
                                           rf"{re.escape(what)} than {shards[0].path}"):
        merge([shards[0].path, b.path], tmp_path / "m")


def test_a_whole_run_is_not_a_shard_and_the_out_directory_must_be_new(tmp_path, store, fake, shards):  # noqa: F811
    whole = _run(tmp_path, store, fake, "whole")
    with pytest.raises(ResultsError, match=f"{whole.path} is not a shard"):
        merge([whole.path, shards[0].path], tmp_path / "m")
    with pytest.raises(ResultsError, match="already holds a run"):
        merge([s.path for s in shards], whole.path)


def test_the_merge_verb_exits_2_with_the_message_and_merges(tmp_path, shards):
    runner = CliRunner()
    index = str(tmp_path / "i.sqlite")
    bad = runner.invoke(app, ["results", "merge", str(shards[0].path), "--out", str(tmp_path / "m"), "--index", index])
    assert bad.exit_code == 2 and "trial(s) missing (shard 2/2 not given)" in bad.output
    good = runner.invoke(app, ["results", "merge", *(str(s.path) for s in shards), "--out", str(tmp_path / "m"),
                               "--index", index, "--json"])
    assert good.exit_code == 0, good.output
    out = json.loads(good.output)
    assert out["status"] == "complete" and len(out["summary"]) == 3 and (tmp_path / "m" / "report.html").is_file()


def test_a_shard_resumes_its_own_share(tmp_path, store, fake, shards):  # noqa: F811
    a = RunDir(shards[0].path)
    first = a.trials()
    a.write_trials(first[:1])
    a.write_manifest(a.manifest() | {"status": "interrupted"})
    path = experiment_file(tmp_path, rates=RATES, repeats=2)
    with pytest.raises(Exception, match="is not shard 2/2; resume it without --shard"):
        run_experiment(path, RunOptions(resume=a.path, store=store, lab=fake["session"], shard=(2, 2)))
    run_experiment(path, RunOptions(resume=a.path, store=store, lab=fake["session"]))
    assert [t["trial"] for t in a.trials()] == [t["trial"] for t in first]
    assert a.manifest()["status"] == "complete"


@pytest.mark.parametrize("count", ["0", "two", "-1"])
def test_nightly_refuses_a_shard_count_that_is_not_a_whole_number(count):
    import subprocess
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run(["bash", "scripts/nightly.sh", "labs/nightly.yaml", count], cwd=repo, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and f"the shard count must be a whole number ≥ 1, not '{count}'" in r.stderr
