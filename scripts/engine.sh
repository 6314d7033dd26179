#!/usr/bin/env bash
# Make sure a Docker engine answers, and stop only an engine this script started.
#   scripts/engine.sh packages  install what is missing of docker.io, debootstrap (base image), graphviz (diagram)
#   scripts/engine.sh start     the packages, then start dockerd when no engine answers
#   scripts/engine.sh stop      stop dockerd if, and only if, `start` started it
set -o errexit -o pipefail -o nounset

PIDFILE=/run/deploystack-dockerd.pid
LOG=/var/log/deploystack-dockerd.log

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "engine.sh: no Docker engine answers and installing/starting one needs root" >&2
    exit 1
  fi
}

packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v dot >/dev/null 2>&1 || missing+=(graphviz)
  if ((${#missing[@]} > 0)); then
    need_root
    echo "engine.sh: installing ${missing[*]} from Debian" >&2
    apt-get update -q  # once, for all of them
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

start() {
  packages
  if docker info >/dev/null 2>&1; then  # the package's service may have started it
    return 0
  fi
  need_root
  echo "engine.sh: starting dockerd (log: $LOG)" >&2
  setsid dockerd >"$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  echo "engine.sh: dockerd did not answer within 60 s; last log lines:" >&2
  tail -n 20 "$LOG" >&2
  exit 1
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  pid=$(cat "$PIDFILE")
  rm -f "$PIDFILE"
  if kill -0 "$pid" 2>/dev/null; then
    echo "engine.sh: stopping the dockerd it started (pid $pid)" >&2
    kill "$pid"
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || return 0
      sleep 1
    done
  fi
}

case "${1:-}" in
  packages) packages ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 packages|start|stop" >&2; exit 2 ;;
esac
