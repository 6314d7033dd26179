#!/usr/bin/env bash
# Make sure a Docker engine answers, and stop only an engine this script started.
#   scripts/engine.sh start   install docker.io (+ debootstrap for the base image) if missing, start dockerd
#   scripts/engine.sh stop    stop dockerd if, and only if, `start` started it
set -o errexit -o pipefail -o nounset

PIDFILE=/run/deploystack-dockerd.pid
LOG=/var/log/deploystack-dockerd.log

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "engine.sh: no Docker engine answers and installing/starting one needs root" >&2
    exit 1
  fi
}

start() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    need_root
    echo "engine.sh: installing docker.io and debootstrap from Debian" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null
  fi
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
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
