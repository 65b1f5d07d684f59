#!/usr/bin/env bash
# `make demo`: the main job on the namespace provider — a short stopping-speed sweep (labs/demo-sweep.yaml:
# rates 5, 20, 100, 1000 attempts/s, TCP and UDP) on the paper's §4.2.1 set-up: the lab is built,
# provisioned, swept, reported and torn down. Prints where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="results/demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/testbed run labs/demo-sweep.yaml --out "$OUT"     # prints the table and where the report is
