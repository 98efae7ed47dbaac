#!/usr/bin/env bash
# Build the project's images.
#
#   python:3.11-slim-bookworm   the base; pulled, or built locally (mmdebstrap + docker import)
#                               and tagged with that name when no registry can be reached
#   pipes-docker-example        the example Pipes job (examples/), dagster_pipes vendored
#   pipes-docker-testjob        the image the integration tests run, dagster_pipes vendored
#   pipes-docker-dind           a Docker engine (and sshd) in a container: the integration tests'
#                               remote engine (images/dind/, docker-compose.test.yml)
#   pipes-docker-swarm-node     a Docker Engine 26 from Debian trixie, for the nodes of the
#                               integration tests' two-node Swarm (images/swarm-node/)
#   pipes-docker-shell-dash     Debian minbase: dash, coreutils, sed, no Python (shell reporter)
#   pipes-docker-shell-busybox  nothing but Debian's busybox-static (shell reporter)
#   pipes-docker-dagster        Dagster (webserver, daemon, code server), this package and the
#                               compose stack's code location (images/dagster/, examples/compose/)
#
# dagster_pipes is copied from the installed package into a throwaway build context
# (`python -m pipes_docker vendor`); it is never committed.
#
# Usage: images/build.sh [--rebuild-base] [IMAGE...]     (PYTHON=... picks the interpreter)
#   IMAGE: example, testjob, dind, swarm-node, shell-dash, shell-busybox, dagster; all by default.
#   The base image is always made sure of. An image whose inputs did not change is not rebuilt.
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

# `docker build`, with BuildKit when the buildx plugin is installed. Without it (Debian
# bookworm's docker.io has none) the legacy builder runs, and the deprecation notice it prints
# on every build (the same lines each time, asking to install buildx) is dropped; the rest of
# its stderr is kept.
docker_build() {
    if docker buildx version >/dev/null 2>&1; then
        DOCKER_BUILDKIT=1 docker build "$@"
    else
        DOCKER_BUILDKIT=0 docker build "$@" \
            2> >(sed -e '/^DEPRECATED: The legacy builder is deprecated/,/^$/d' >&2)
    fi
}

# The hash of a build context's files and the base image's id.
context_hash() {
    {
        (cd "$1" && find . -type f -not -path '*/__pycache__/*' -print0 | sort -z |
            xargs -0 sha256sum)
        docker image inspect --format '{{.Id}}' "$BASE_IMAGE"
    } | sha256sum | cut -c1-16
}

# A job image: its dir with dagster_pipes vendored. Skipped when the image exists and was
# built from the same files (the vendored copy follows the installed dagster-pipes).
build_job_image() {
    local name="$1" dir="$2"
    local context hash previous
    context="$(mktemp -d)"
    cp -R "$dir/." "$context/"
    "$PYTHON" -m pipes_docker vendor "$context/vendor" >/dev/null
    hash="$(context_hash "$context")"
    if is_up_to_date "$name" "$hash"; then
        log "$name is up to date"
        rm -rf "$context"
        return
    fi
    log "building $name"
    previous="$(docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)"
    # --network none: the Dockerfiles need no network, and this engine has no bridge.
    docker_build --quiet --network none --label "$LABEL" --label "io.pipes-docker.inputs=$hash" \
        -t "$name" "$context" >/dev/null
    rm -rf "$context"
    # The image this one replaces stays behind untagged unless a container still uses it.
    if [[ -n "$previous" && "$previous" != "$(docker image inspect --format '{{.Id}}' "$name")" ]]
    then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
}

# True when image $1 exists and was built from inputs hashing to $2 (its io.pipes-docker.inputs
# label): such an image is not built again.
is_up_to_date() {
    local built
    built="$(docker image inspect --format '{{index .Config.Labels "io.pipes-docker.inputs"}}' \
        "$1" 2>/dev/null || true)"
    [[ "$built" == "$2" ]]
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
    local name="pipes-docker-dind:latest" hash work cid
    hash="$(dind_inputs_hash)"
    if is_up_to_date "$name" "$hash"; then
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
    docker_build --quiet --network none --label "$LABEL" \
        --label "io.pipes-docker.inputs=$hash" -t "$name" "$work/context" >/dev/null
    rm -rf "$work"
}

# The hash of what goes into the Dagster image: its build files, the code location, the package's
# sources, the venv's exact versions and the base image's id.
dagster_inputs_hash() {
    {
        (cd "$ROOT" && find images/dagster examples/compose/definitions.py examples/dg_project \
            pipes_docker pyproject.toml LICENSE -type f -not -path '*/__pycache__/*' \
            -not -path '*.egg-info/*' -print0 |
            sort -z | xargs -0 sha256sum)
        "$PYTHON" -m pip freeze --exclude-editable 2>/dev/null
        docker image inspect --format '{{.Id}}' "$BASE_IMAGE"
    } | sha256sum | cut -c1-16
}

# Containers cannot reach a package index, so the wheels are made here, on the host, with the
# versions installed in .venv (its `pip freeze` is the build's constraints file), and installed
# in the build with --no-index. Skipped when the image exists and was built from the same inputs.
build_dagster_image() {
    local name="pipes-docker-dagster:latest" hash work version pip_version previous
    hash="$(dagster_inputs_hash)"
    if is_up_to_date "$name" "$hash"; then
        log "$name is up to date"
        return
    fi
    work="$(mktemp -d)"
    cp -R "$ROOT/images/dagster" "$work/context"
    cp "$ROOT/examples/compose/definitions.py" "$work/context/"
    cp -R "$ROOT/examples/dg_project" "$work/context/dg_project"
    find "$work/context/dg_project" \( -name __pycache__ -o -name '*.egg-info' \) -prune \
        -exec rm -rf {} +
    # The package is built from a copy of its sources, so no build/ dir lands in the checkout.
    mkdir "$work/package"
    cp -R "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/LICENSE" "$ROOT/pipes_docker" "$work/package/"
    find "$work/package" -name __pycache__ -prune -exec rm -rf {} +
    "$PYTHON" -m pip freeze --exclude-editable 2>/dev/null >"$work/context/constraints.txt"
    version="$("$PYTHON" -c 'import dagster; print(dagster.__version__)')"
    pip_version="$("$PYTHON" -c 'import pip; print(pip.__version__)')"
    printf '%s\n' "dagster==$version" "dagster-webserver==$version" pipes-docker \
        >"$work/context/requirements.txt"
    log "making the wheelhouse for $name (dagster $version)"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check -w "$work/context/wheels" \
        --constraint "$work/context/constraints.txt" \
        "pip==$pip_version" "dagster==$version" "dagster-webserver==$version" "$work/package"
    log "building $name"
    previous="$(docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)"
    docker_build --quiet --network none --label "$LABEL" \
        --label "io.pipes-docker.inputs=$hash" -t "$name" "$work/context" >/dev/null
    # The install stage (with the wheelhouse) stays behind as an untagged image, and so does the
    # image this one replaces (unless a container still uses it): remove them, ~0.5 GB each.
    docker image prune --force --filter label=io.pipes-docker.build-stage=dagster-install \
        >/dev/null
    if [[ -n "$previous" && "$previous" != "$(docker image inspect --format '{{.Id}}' "$name")" ]]
    then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}

# A Debian trixie root with the packages images/swarm-node/packages lists, made by mmdebstrap on
# the host (which reaches the Debian archive; containers do not) and imported. Skipped when the
# image exists and was built from the same list.
build_swarm_node_image() {
    local name="pipes-docker-swarm-node:latest" hash packages work
    hash="$(sha256sum "$ROOT/images/swarm-node/packages" | cut -c1-16)"
    if is_up_to_date "$name" "$hash"; then
        log "$name is up to date"
        return
    fi
    packages="$(grep -v '^#' "$ROOT/images/swarm-node/packages" | paste -sd, -)"
    work="$(mktemp -d)"
    log "building $name from Debian trixie (mmdebstrap, ~45 s)"
    mmdebstrap --quiet --variant=apt --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' \
        trixie "$work/root.tar"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL $LABEL" \
        --change "LABEL io.pipes-docker.inputs=$hash" \
        --change 'ENTRYPOINT ["dockerd"]' \
        "$work/root.tar" "$name" >/dev/null
    rm -rf "$work"
}

# Images with no Python, for the shell reporter's protocol suite (tests/integration/
# test_protocol_suite.py). Skipped when the image exists and was built from the same recipe.
SHELL_RECIPE_VERSION=1

# Debian bookworm's minbase: dash as /bin/sh, coreutils, sed; no Python.
build_shell_dash_image() {
    local name="pipes-docker-shell-dash:latest" hash work
    hash="$(printf 'dash minbase bookworm %s' "$SHELL_RECIPE_VERSION" | sha256sum | cut -c1-16)"
    if is_up_to_date "$name" "$hash"; then
        log "$name is up to date"
        return
    fi
    work="$(mktemp -d)"
    log "building $name from Debian bookworm minbase (mmdebstrap, ~30 s)"
    mmdebstrap --quiet --variant=minbase \
        --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' \
        bookworm "$work/root.tar"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL $LABEL" \
        --change "LABEL io.pipes-docker.inputs=$hash" \
        --change 'CMD ["sh"]' \
        "$work/root.tar" "$name" >/dev/null
    rm -rf "$work"
}

# A root holding only Debian's busybox-static: /bin/busybox, a symlink per applet, /tmp.
build_shell_busybox_image() {
    local name="pipes-docker-shell-busybox:latest" hash work applet
    work="$(mktemp -d)"
    # Downloaded as root into our private temp dir (apt's _apt user cannot enter it).
    (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root busybox-static >/dev/null)
    hash="$( (sha256sum "$work"/busybox-static_*.deb | cut -d' ' -f1
        echo "busybox $SHELL_RECIPE_VERSION") | sha256sum | cut -c1-16)"
    if is_up_to_date "$name" "$hash"; then
        log "$name is up to date"
        rm -rf "$work"
        return
    fi
    log "building $name from Debian's busybox-static"
    dpkg-deb -x "$work"/busybox-static_*.deb "$work/deb"
    mkdir -p "$work/root/bin" "$work/root/tmp" "$work/root/etc"
    chmod 1777 "$work/root/tmp"
    cp "$work/deb/bin/busybox" "$work/root/bin/busybox"
    for applet in $("$work/root/bin/busybox" --list); do
        [[ "$applet" == busybox ]] || ln -s busybox "$work/root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' \
        >"$work/root/etc/passwd"
    tar -C "$work/root" -cf "$work/root.tar" .
    docker import \
        --change 'ENV PATH=/bin' \
        --change "LABEL $LABEL" \
        --change "LABEL io.pipes-docker.inputs=$hash" \
        --change 'CMD ["sh"]' \
        "$work/root.tar" "$name" >/dev/null
    rm -rf "$work"
}

rebuild_base=""
if [[ "${1:-}" == "--rebuild-base" ]]; then
    rebuild_base="--rebuild-base"
    shift
fi
images=("$@")
((${#images[@]})) || images=(example testjob dind swarm-node shell-dash shell-busybox dagster)
ensure_base "$rebuild_base"
for image in "${images[@]}"; do
    case "$image" in
        example) build_job_image pipes-docker-example:latest "$ROOT/images/example" ;;
        testjob) build_job_image pipes-docker-testjob:latest "$ROOT/images/testjob" ;;
        dind) build_dind_image ;;
        swarm-node) build_swarm_node_image ;;
        shell-dash) build_shell_dash_image ;;
        shell-busybox) build_shell_busybox_image ;;
        dagster) build_dagster_image ;;
        *) log "unknown image $image"; exit 2 ;;
    esac
done
log "done"
