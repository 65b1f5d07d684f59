"""The report for a paper: the paper's figure beside every row it covers and a comparison section, "agrees with
the model", 95 % confidence intervals over the repeats, the full configuration and tool versions, links to the
run's files (also from a report written elsewhere with --out), captions that say what a plot shows."""

from __future__ import annotations

import json
import re

import pytest

from orchestrator.results.paper import ci95, paper_for, within_paper
from orchestrator.results.report import build_report
from tests.results.test_results import make_run, trial


def test_ci95_is_students_t_on_the_mean():
    assert ci95([5.0]) is None and ci95([]) is None
    lo, hi = ci95([9.0, 9.5, 9.5])
    assert (round(lo, 3), round(hi, 3)) == (8.616, 10.051)             # 9.333 ± 4.303 · 0.2887 / √3
    lo, hi = ci95([1.0, 2.0] * 20)                                       # 39 degrees of freedom: 1.96
    assert hi - 1.5 == pytest.approx(1.96 * 0.5064 / 40 ** 0.5, rel=1e-3)


def test_the_paper_covers_tcp_rows_from_20_per_second_and_nimda():
    assert paper_for(None, "tcp", 20).out == "≤ 5 packets"
    assert paper_for(None, "tcp", 1000).stop == "< 5 s" and paper_for(None, "tcp", 1000).out is None
    assert paper_for(None, "tcp", 5) is None and paper_for(None, "udp", 20) is None
    assert paper_for("nimda-like", "tcp", 200).stop == "0.25 s"
    assert within_paper(paper_for(None, "tcp", 20), 5.25, 5) is False       # the host placement's 5.25 s
    assert within_paper(paper_for(None, "tcp", 20), 2.8, 5) is True          # the wire placement's ~2.8 s
    assert within_paper(paper_for(None, "tcp", 20), None, None) is None


def run_with_repeats(tmp_path, out_dir=None):
    ts = [trial("tcp", r, k, s, o) for r, vals in ((5, [(24.8, 24), (24.9, 24), (24.8, 24)]),
                                                    (20, [(5.25, 5), (5.26, 5), (5.24, 5)]),
                                                    (100, [(1.0, 0), (1.01, 1), (1.0, 0)]))
          for k, (s, o) in enumerate(vals, start=1)]
    ts += [trial("udp", 20, k, 5.25, 5) for k in (1, 2, 3)]
    run = make_run(tmp_path / "run", ts)
    tdir = run.path / "trials" / "tcp-r20-1"
    tdir.mkdir(parents=True)
    for name in ("capture.pcap", "throttle.jsonl", "worm.jsonl", "analysis.json"):
        (tdir / name).write_text("{}\n")
    recs = run.trials()
    recs[3]["files"] = {"pcap": "trials/tcp-r20-1/capture.pcap", "throttle_log": "trials/tcp-r20-1/throttle.jsonl",
                        "worm_log": "trials/tcp-r20-1/worm.jsonl"}
    run.write_trials(recs)
    man = run.manifest()
    man["experiment"].update(rates=[5, 20, 100], repeats=3, timeout_s=30, state="full", gateway_empty="reset",
                             worm={"strategy": "sequential", "port": 8080, "scan": "198.18.9.0/24", "profile": None})
    man["versions"].update({"tcpdump": "tcpdump version 4.99.3", "python": "3.11.2"})
    run.write_manifest(man)
    md, page = build_report(run, out_dir)
    return run, md.read_text(), page.read_text()


def test_every_covered_row_has_the_papers_figure_and_the_comparison_explains_the_difference(tmp_path):
    _, md, page = run_with_repeats(tmp_path)
    rows = {tuple(c.strip() for c in line.split("|")[2:4]): line for line in md.splitlines()
            if line.startswith("| test worm |")}
    assert rows[("tcp", "20")].endswith("| < 5 s, ≤ 5 packets |")
    assert rows[("tcp", "100")].endswith("| < 5 s |")
    assert rows[("tcp", "5")].endswith("|  |") and rows[("udp", "20")].endswith("|  |")
    assert "| agrees with the model |" in md.splitlines()[12] and "<th>agrees with the model</th>" in page
    section = md.split("## Comparison with the paper")[1].split("## Notes")[0]
    assert "- TCP at 20/s: **5.250 s, 5 out** here, the paper: < 5 s, ≤ 5 packets" in section
    assert "— outside the paper's figure." in section and "TCP at 100/s" in section and "UDP" not in section
    assert "**in the infected host's own stack**" in section and "`throttle: {placement: wire}`" in section
    assert "<code>throttle: {placement: wire}</code>" in page


def test_repeats_and_95_percent_confidence_intervals(tmp_path):
    _, md, _ = run_with_repeats(tmp_path)
    line = next(x for x in md.splitlines() if x.startswith("| test worm | tcp | 20 |"))
    assert "| 5.250 ± 0.010 | 5.225–5.275 |" in line and "| 3/3 |" in line
    assert "3 repeat(s) per row" in md and "95 % confidence interval of the mean (Student t)" in md


def test_configuration_versions_and_links_to_every_file(tmp_path):
    run, md, page = run_with_repeats(tmp_path)
    config = md.split("## Configuration and versions")[1].split("## Files")[0]
    for want in ("| rates | 5, 20, 100 attempts/s |", "| repeats | 3 |", "| timeout | 30 s per trial |",
                 "| throttle | delay_queue_limit=100, placement=host, policy=packets, release_period_s=1.0, "
                 "working_set_size=5 |", "| worm | port=8080, scan=198.18.9.0/24, strategy=sequential |",
                 "| version: tcpdump | tcpdump version 4.99.3 |", "| seed | 1 |"):
        assert want in config, want
    files = md.split("## Files")[1]
    for want in ("[summary.csv](summary.csv)", "[manifest.json](manifest.json)",
                 "[tcp-r20-1: pcap](trials/tcp-r20-1/capture.pcap)",
                 "[tcp-r20-1: worm_log](trials/tcp-r20-1/worm.jsonl)",
                 "[tcp-r20-1: analysis](trials/tcp-r20-1/analysis.json)"):
        assert want in files, want
    assert '<a href="trials/tcp-r20-1/throttle.jsonl">tcp-r20-1: throttle_log</a>' in page


def test_a_report_written_elsewhere_links_back_into_the_run(tmp_path):
    run, md, _ = run_with_repeats(tmp_path, tmp_path / "paper" / "fig")
    assert "[summary.csv](../../run/summary.csv)" in md
    assert (tmp_path / "paper" / "fig" / "plots" / "stopping-time.png").is_file()


def test_captions_say_what_a_plot_shows_and_the_html_is_self_contained(tmp_path):
    _, md, page = run_with_repeats(tmp_path)
    assert "*Time from the worm's first attempt to the throttle's block, against the scan rate, one panel per " \
           "protocol" in md
    caps = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(caps) == 4 and all(len(c) > 80 and ".png" not in c for c in caps)
    assert page.count('src="data:image/png;base64,') == 4 and "max-width:520px" not in page
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["experiment"]["repeats"] == 3
