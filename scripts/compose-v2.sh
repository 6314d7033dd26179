#!/usr/bin/env bash
# Print the path of a Compose v2 binary for `make bench` (the generate vs `docker compose config` ratio):
# $DEPLOYSTACK_COMPOSE, else `docker-compose` on PATH when it is v2, else one taken from Debian 13's
# docker-compose package (2.26) with apt-get in a container of deploystack/base:trixie (no registry
# needed), cached in bench-results/tools/. Exit 1 with a reason on stderr when none can be had.
set -o errexit -o pipefail -o nounset

cache="$(cd "$(dirname "$0")/.." && pwd)/bench-results/tools"
is_v2() { "$1" version --short 2>/dev/null | grep -q '^v\?2\.'; }

if [[ -n ${DEPLOYSTACK_COMPOSE:-} ]]; then
    is_v2 "$DEPLOYSTACK_COMPOSE" || { echo "DEPLOYSTACK_COMPOSE=$DEPLOYSTACK_COMPOSE is not Compose v2" >&2; exit 1; }
    printf '%s\n' "$DEPLOYSTACK_COMPOSE"; exit 0
fi
if command -v docker-compose >/dev/null && is_v2 "$(command -v docker-compose)"; then
    command -v docker-compose; exit 0
fi
if [[ -x $cache/docker-compose ]] && is_v2 "$cache/docker-compose"; then
    printf '%s\n' "$cache/docker-compose"; exit 0
fi
docker image inspect deploystack/base:trixie >/dev/null 2>&1 \
    || { echo "no Compose v2: set DEPLOYSTACK_COMPOSE, or build deploystack/base:trixie (deploystack up does)" >&2; exit 1; }
mkdir -p "$cache"
docker run --rm --user 0 -v "$cache:/out" deploystack/base:trixie sh -c '
    set -e
    apt-get update -qq >/dev/null
    cd /tmp && apt-get download -qq docker-compose >/dev/null
    dpkg-deb -x docker-compose_*.deb x
    install -m 0755 x/usr/libexec/docker/cli-plugins/docker-compose /out/docker-compose
    chown "$(stat -c %u:%g /out)" /out/docker-compose' >&2
is_v2 "$cache/docker-compose" || { echo "the docker-compose fetched from Debian 13 is not v2" >&2; exit 1; }
printf '%s\n' "$cache/docker-compose"
