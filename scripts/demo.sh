#!/usr/bin/env bash
# Set up (scripts/setup.sh), then materialize the example asset, whose work runs in a
# container, and print the metadata it reported.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
.venv/bin/python -m examples.demo
