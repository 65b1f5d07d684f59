"""What becomes of a run once the runner has written it: listed in the index of runs (from the moment it
opens, so `results list` shows it running) and reported (report.md/report.html with plots) when it ends.
The CLI hands these to the runner as its hooks; the runner itself never imports results/."""

from __future__ import annotations

from pathlib import Path

from orchestrator.experiment.rundir import RunDir
from orchestrator.results.index import Index
from orchestrator.results.report import build_report


class Publisher:
    """Index (at `index_path`, or nowhere when None) and report one run."""

    def __init__(self, index_path: str | Path | None = "results/index.sqlite"):
        self.index_path = index_path

    def opened(self, rdir: RunDir) -> None:
        self._index(rdir)

    def finished(self, rdir: RunDir) -> None:
        build_report(rdir)
        self._index(rdir)

    def _index(self, rdir: RunDir) -> None:
        if not self.index_path:
            return
        idx = Index(self.index_path)
        try:
            idx.record(rdir)
        finally:
            idx.close()
