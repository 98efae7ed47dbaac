#!/usr/bin/env bash
# Set up what the demo needs (scripts/setup.sh --demo: an engine, the package, the base and
# example images; none of the test engines, browsers or their images), then materialize the
# example assets, whose work runs in containers, and print the metadata they reported.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh --demo
.venv/bin/python -m examples.demo
