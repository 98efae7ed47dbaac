#!/usr/bin/env bash
# Set up everything pipes-docker needs on this machine, idempotently:
#   1. system packages: a Docker engine (Debian's docker.io), mmdebstrap (to build a base image
#      when no registry can be reached), docker-compose, podman and catatonit (test engines),
#      chromium (the end-to-end tests' browser, driven by Playwright; it downloads none);
#   2. a running engine: when `docker info` fails, start dockerd in the background with no
#      bridge network (containers run with network "none" or "host");
#   3. the virtualenv .venv with the package and its dev dependencies;
#   4. the images (images/build.sh).
#
# Usage: scripts/setup.sh [--demo]
#   --demo: only what the demo needs (scripts/demo.sh): the engine, mmdebstrap, the package in
#   .venv without its dev dependencies, and the base, example and shell-dash images (the demo's
#   shell-only job runs in an image with no Python).
set -euo pipefail

MODE="full"
if [[ "${1:-}" == "--demo" ]]; then
    MODE="demo"
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/pipes-docker-dockerd.log}"

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

install_system_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    if [[ "$MODE" == full ]]; then
        local extra
        read -ra extra <<<"$(test_packages_missing)"
        missing+=("${extra[@]}")
    fi
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# What the tests need beyond the engine: prints the packages that are missing.
test_packages_missing() {
    local missing=()
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    # Podman's Docker-compatible API is one of the integration tests' engines; catatonit is
    # its init (for init=True).
    command -v podman >/dev/null || missing+=(podman)
    command -v catatonit >/dev/null || missing+=(catatonit)
    # The browser the end-to-end tests drive (tests/e2e): Debian's, not one Playwright downloads.
    command -v chromium >/dev/null || missing+=(chromium)
    # The shell reporter's unit tests run it under the host's dash and BusyBox ash.
    command -v busybox >/dev/null || missing+=(busybox-static)
    command -v dash >/dev/null || missing+=(dash)
    echo "${missing[@]}"
}

start_engine() {
    if docker info >/dev/null 2>&1; then
        log "Docker engine is reachable"
        return
    fi
    if [[ -n "${DOCKER_HOST:-}" ]]; then
        log "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local engine"
        exit 1
    fi
    log "starting dockerd (no bridge network; log in $DOCKERD_LOG)"
    as_root sh -c "nohup dockerd --bridge=none --iptables=false --ip6tables=false \
        >'$DOCKERD_LOG' 2>&1 &"
    for _ in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            log "Docker engine is up"
            return
        fi
        sleep 0.5
    done
    log "dockerd did not come up; last lines of $DOCKERD_LOG:"
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    exit 1
}

make_venv() {
    local stamp=".venv/.pipes-docker-installed" demo_stamp=".venv/.pipes-docker-installed-demo"
    if [[ ! -x .venv/bin/python ]]; then
        log "creating .venv"
        "$PYTHON_BIN" -m venv .venv
    fi
    if [[ "$MODE" == demo && -f "$stamp" && ! pyproject.toml -nt "$stamp" ]]; then
        return # the full install has the demo's too
    fi
    if [[ "$MODE" == demo ]]; then
        if [[ ! -f "$demo_stamp" || pyproject.toml -nt "$demo_stamp" ]]; then
            log "installing pipes-docker into .venv"
            .venv/bin/python -m pip install -q --upgrade pip >/dev/null
            .venv/bin/python -m pip install -q -e .
            touch "$demo_stamp"
        fi
        return
    fi
    if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
        log "installing pipes-docker and its dev dependencies into .venv"
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q -e '.[dev]'
        touch "$stamp"
    fi
}

install_system_packages
start_engine
make_venv
if [[ "$MODE" == demo ]]; then
    images/build.sh example shell-dash
else
    images/build.sh
fi
