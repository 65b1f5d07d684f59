"""Experiments: experiment files, the runner (a sweep of trials on one lab), a trial, capture, agreement
with the model, watching processes, and the run directory a run writes."""
