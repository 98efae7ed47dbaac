#!/usr/bin/env bash
# Build the project's images.
#
#   python:3.11-slim-bookworm   the base; pulled, or built locally (mmdebstrap + docker import)
#                               and tagged with that name when no registry can be reached
#   pipes-docker-example        the example Pipes job (examples/), dagster_pipes vendored
#   pipes-docker-testjob        the image the integration tests run, dagster_pipes vendored
#   pipes-docker-dind           a Docker engine (and sshd) in a container: the integration tests'
#                               remote engine (images/dind/, docker-compose.test.yml)
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

# The hash of what goes into the DinD image: its build files and the base image's id.
dind_inputs_hash() {
    {
        (cd "$ROOT/images/dind" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        docker image inspect --format '{{.Id}}' "$BASE_IMAGE"
    } | sha256sum | cut -c1-16
}

# Debian's docker.io and openssh-server go into the base as .deb files downloaded here, on the
# host (containers cannot reach the archive): apt resolves them against the base image's dpkg
# status, so exactly the missing packages are fetched. The host's apt must serve bookworm, the
# base's release. Skipped when the image exists and was built from the same inputs.
build_dind_image() {
    local name="pipes-docker-dind:latest" hash built work cid
    hash="$(dind_inputs_hash)"
    built="$(docker image inspect --format '{{index .Config.Labels "io.pipes-docker.inputs"}}' \
        "$name" 2>/dev/null || true)"
    if [[ "$built" == "$hash" ]]; then
        log "$name is up to date"
        return
    fi
    # shellcheck disable=SC1091
    if [[ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" != bookworm ]]; then
        log "$name needs Debian bookworm's packages: run images/build.sh on a bookworm host"
        exit 1
    fi
    work="$(mktemp -d)"
    chmod 755 "$work" # apt downloads as its _apt user
    cp -R "$ROOT/images/dind" "$work/context"
    mkdir -p "$work/context/debs/partial"
    cid="$(docker create "$BASE_IMAGE")"
    docker cp "$cid:/var/lib/dpkg/status" "$work/dpkg-status"
    docker rm "$cid" >/dev/null
    log "downloading docker.io and openssh-server for $name"
    apt-get install --download-only --no-install-recommends -y -qq \
        -o Dir::State::status="$work/dpkg-status" \
        -o Dir::Cache::archives="$work/context/debs" \
        -o Debug::NoLocking=1 \
        docker.io openssh-server iproute2 >/dev/null
    rm -rf "$work/context/debs/partial"
    log "building $name"
    DOCKER_BUILDKIT=0 docker build --quiet --network none --label "$LABEL" \
        --label "io.pipes-docker.inputs=$hash" -t "$name" "$work/context" >/dev/null
    rm -rf "$work"
}

ensure_base "${1:-}"
build_job_image pipes-docker-example:latest "$ROOT/images/example"
build_job_image pipes-docker-testjob:latest "$ROOT/images/testjob"
build_dind_image
log "done"
