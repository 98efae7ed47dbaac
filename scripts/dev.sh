#!/usr/bin/env bash
# The local Dagster stack of examples/compose/ (webserver, daemon, code server) whose assets run
# their jobs in sibling containers on this machine's engine.
#
#   scripts/dev.sh up     set up what is missing (scripts/setup.sh: engine, .venv, images), start
#                         the stack and wait until the UI answers at http://127.0.0.1:PORT
#   scripts/dev.sh down   stop it and leave nothing of it: its containers, its volumes (the
#                         Dagster instance with them) and any job container it launched
#
# Settings (env vars):
#   PIPES_DOCKER_DEV_PORT       the UI's port on 127.0.0.1 (default 3000)
#   PIPES_DOCKER_DEV_PROJECT    the compose project name (default pipes-docker-dev)
#   PIPES_DOCKER_HOST_TEMP_DIR  a host dir for the mounted channel (examples/compose/
#                               mounted-channel.yml); unset, the job containers stream
#   PIPES_DOCKER_DEV_SKIP_SETUP=1  do not run scripts/setup.sh (it has run already)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="$ROOT/examples/compose"
PORT="${PIPES_DOCKER_DEV_PORT:-3000}"
export COMPOSE_PROJECT_NAME="${PIPES_DOCKER_DEV_PROJECT:-pipes-docker-dev}"
export PIPES_DOCKER_DEV_PORT="$PORT"
UP_TIMEOUT_SECONDS="${PIPES_DOCKER_DEV_UP_TIMEOUT:-120}"

log() { printf '[dev] %s\n' "$*" >&2; }

compose() {
    local files=(-f "$STACK/docker-compose.yml")
    if [[ -n "${PIPES_DOCKER_HOST_TEMP_DIR:-}" ]]; then
        files+=(-f "$STACK/mounted-channel.yml")
    fi
    docker-compose --project-directory "$STACK" "${files[@]}" "$@"
}

ui_answers() {
    curl --silent --fail --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/server_info"
}

port_is_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

fail_with_logs() {
    log "$1; the services' last log lines:"
    compose logs --no-color --tail 30 >&2 || true
    exit 1
}

up() {
    if [[ "${PIPES_DOCKER_DEV_SKIP_SETUP:-}" != 1 ]]; then
        "$ROOT/scripts/setup.sh"
    fi
    if [[ -n "${PIPES_DOCKER_HOST_TEMP_DIR:-}" ]]; then
        if [[ "$PIPES_DOCKER_HOST_TEMP_DIR" != /* ]]; then
            log "PIPES_DOCKER_HOST_TEMP_DIR must be an absolute path"
            exit 1
        fi
        mkdir -p "$PIPES_DOCKER_HOST_TEMP_DIR"
        log "job containers will use the mounted channel through $PIPES_DOCKER_HOST_TEMP_DIR"
    fi
    if ! compose ps -q webserver 2>/dev/null | grep -q . && port_is_taken; then
        log "127.0.0.1:$PORT is taken: pick another port with PIPES_DOCKER_DEV_PORT=..."
        exit 1
    fi
    log "starting project $COMPOSE_PROJECT_NAME"
    compose up -d --remove-orphans
    local deadline=$((SECONDS + UP_TIMEOUT_SECONDS)) state
    until ui_answers; do
        for service in code dg-code webserver daemon; do
            state="$(docker inspect --format '{{.State.Status}}' \
                "$(compose ps -q "$service")" 2>/dev/null || echo missing)"
            if [[ "$state" != running ]]; then
                fail_with_logs "service $service is $state"
            fi
        done
        if ((SECONDS > deadline)); then
            fail_with_logs "the UI did not answer within ${UP_TIMEOUT_SECONDS} s"
        fi
        sleep 1
    done
    log "the Dagster UI is up at http://127.0.0.1:$PORT"
}

down() {
    log "stopping project $COMPOSE_PROJECT_NAME"
    compose down --volumes --remove-orphans
    # Job containers the stack's runs left behind (a run cut off by the shutdown): the code
    # location labels each with its project.
    local leftovers
    leftovers="$(docker ps --all --quiet --filter label=io.pipes-docker.managed=true \
        --filter "label=io.pipes-docker.dev-stack=$COMPOSE_PROJECT_NAME")"
    if [[ -n "$leftovers" ]]; then
        log "removing job containers left behind: $(echo "$leftovers" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        docker rm --force $leftovers >/dev/null
    fi
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
    echo "usage: scripts/dev.sh up|down" >&2
    exit 2
    ;;
esac
