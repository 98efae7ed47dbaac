#!/usr/bin/env bash
# Build the project's images.
#
#   python:3.11-slim-bookworm   the base; pulled, or built locally (mmdebstrap + docker import)
#                               and tagged with that name when no registry can be reached
#   pipes-docker-example        the example Pipes job (examples/), dagster_pipes vendored
#   pipes-docker-testjob        the image the integration tests run, dagster_pipes vendored
#
# dagster_pipes is copied from the installed package into a throwaway build context
# (`python -m pipes_docker vendor`); it is never committed.
#
# Usage: images/build.sh [--rebuild-base]     (PYTHON=... picks the interpreter)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
BASE_IMAGE="python:3.11-slim-bookworm"
LABEL="io.pipes-docker.image=true"

log() { printf '[images] %s\n' "$*" >&2; }

build_base_locally() {
    command -v mmdebstrap >/dev/null || {
        log "mmdebstrap is missing: run scripts/setup.sh (or apt-get install mmdebstrap)"
        exit 1
    }
    local work
    work="$(mktemp -d)"
    log "building $BASE_IMAGE locally from Debian bookworm (mmdebstrap, ~30 s)"
    mmdebstrap --quiet --variant=apt --include=python3,python-is-python3 \
        --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' \
        bookworm "$work/base.tar"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $LABEL" \
        --change 'CMD ["python3"]' \
        "$work/base.tar" "$BASE_IMAGE" >/dev/null
    rm -rf "$work"
}

ensure_base() {
    if [[ "${1:-}" != "--rebuild-base" ]] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "$BASE_IMAGE is present"
        return
    fi
    if [[ "${1:-}" != "--rebuild-base" ]] && timeout 120 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
        log "pulled $BASE_IMAGE"
        return
    fi
    build_base_locally
}

build_job_image() {
    local name="$1" dir="$2"
    local context
    context="$(mktemp -d)"
    cp -R "$dir/." "$context/"
    "$PYTHON" -m pipes_docker vendor "$context/vendor" >/dev/null
    log "building $name"
    # --network none: the Dockerfiles need no network, and this engine has no bridge.
    DOCKER_BUILDKIT=0 docker build --quiet --network none --label "$LABEL" \
        -t "$name" "$context" >/dev/null
    rm -rf "$context"
}

ensure_base "${1:-}"
build_job_image pipes-docker-example:latest "$ROOT/images/example"
build_job_image pipes-docker-testjob:latest "$ROOT/images/testjob"
log "done"
