#!/usr/bin/env bash
# Make the offsite replica the primary, for good: when the stack's primary is lost.
# The apps' roles and their passwords came with the replicated data: the promoted server keeps them.
set -o errexit -o pipefail -o nounset
here=$(cd "$(dirname "$0")" && pwd)
source "$here/bundle.env"

promoted=$(docker exec "$NAME" psql -X -q -t -A -h /run/postgresql -U postgres -d postgres \
    -c 'SELECT pg_promote(true, 60)')
[[ $promoted == t ]] || { echo "promoting $NAME failed: $promoted" >&2; exit 1; }
# Recreated as a primary, so that a restart does not make it a standby again (the data stays in its volume).
docker stop --time 60 "$NAME" >/dev/null
docker rm "$NAME" >/dev/null
ROLE=primary "$here/run.sh"
