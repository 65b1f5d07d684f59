#!/usr/bin/env bash
# `make demo`: the main job on the namespace provider. Until the experiment runner lands this builds the
# paper's testbed, audits its isolation, shows its status, and tears it down (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
T=".venv/bin/testbed"
LAB=paper-testbed
trap '$T down $LAB >/dev/null 2>&1 || true' EXIT
$T down $LAB >/dev/null            # a lab of that name left by an interrupted demo
$T up labs/paper-testbed.yaml
$T check $LAB
$T status $LAB
$T down $LAB
trap - EXIT
