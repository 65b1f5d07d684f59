#!/usr/bin/env bash
# Nightly stopping-speed run: measure, keep the results, gate on regressions against the previous complete
# run of the same experiment (or BASELINE). Exit codes: 0 fine, 1 regression or failed run, 2 bad input.
#   scripts/nightly.sh [EXPERIMENT [SHARDS]]   (default labs/nightly.yaml, 1)
#   env: RESULTS (default results/nightly), TOLERANCE (default 0.10), BASELINE (a run id or directory)
# With SHARDS=N > 1 the sweep runs as shards 1/N … N/N, one after another on this machine (a CI matrix runs
# one each, `--shard I/N`: docs/nightly.md), joined by `testbed results merge` into the night's run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
EXP="${1:-labs/nightly.yaml}"
SHARDS="${2:-1}"
case "$SHARDS" in ''|*[!0-9]*|0) echo "nightly: the shard count must be a whole number ≥ 1, not '$SHARDS'" >&2; exit 2;; esac
RESULTS="${RESULTS:-results/nightly}"
TOLERANCE="${TOLERANCE:-0.10}"
STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$RESULTS/$STAMP"
INDEX="$RESULTS/index.sqlite"
T=.venv/bin/testbed
make -s setup
mkdir -p "$RESULTS"
NAME="$(.venv/bin/python -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["experiment"])' "$EXP")"
BASE="${BASELINE:-$($T results list --index "$INDEX" --json | .venv/bin/python -c '
import json, sys
runs = [r for r in json.load(sys.stdin) if r["experiment"] == sys.argv[1] and r["status"] == "complete" and not r["gone"]]
print(runs[0]["path"] if runs else "")' "$NAME")}"
if [ "$SHARDS" -eq 1 ]; then
  $T run "$EXP" --out "$OUT" --index "$INDEX" --junit "$OUT/junit.xml"
else
  PARTS=()
  for I in $(seq 1 "$SHARDS"); do
    $T run "$EXP" --shard "$I/$SHARDS" --out "$RESULTS/shards/$STAMP/$I" --index "$RESULTS/shards/index.sqlite"
    PARTS+=("$RESULTS/shards/$STAMP/$I")
  done
  $T results merge "${PARTS[@]}" --out "$OUT" --index "$INDEX" --junit "$OUT/junit.xml"
fi
ln -sfn "$STAMP" "$RESULTS/latest"
if [ -n "$BASE" ]; then
  $T results compare "$BASE" "$OUT" --index "$INDEX" --tolerance "$TOLERANCE" --fail-on-regression
else
  echo "nightly: no earlier complete run of '$NAME' to compare with; this run is the baseline"
fi
