#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run every test: unit tests and the
# integration tests against the real Docker engine. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
.venv/bin/ruff check pipes_docker tests examples benchmarks
.venv/bin/mypy
# The integration tests must run here: a missing engine fails them, it never skips them.
PIPES_DOCKER_REQUIRE_ENGINE=1 .venv/bin/python -m pytest tests "$@"
