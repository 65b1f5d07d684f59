"""What becomes of finished runs: the index of runs, regressions between runs, reports."""
