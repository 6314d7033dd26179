#!/usr/bin/env bash
# Make the offsite replica the primary, for good: when the stack's primary is lost.
# Needs POSTGRES_PASSWORD, the app role's password (POSTGRES_PASSWORD in the stack's .env), which the
# promoted server keeps for the app role.
set -o errexit -o pipefail -o nounset
here=$(cd "$(dirname "$0")" && pwd)
source "$here/bundle.env"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD to the app role password (POSTGRES_PASSWORD in the stack .env)}"

promoted=$(docker exec "$NAME" psql -X -q -t -A -h /run/postgresql -U postgres -d postgres \
    -c 'SELECT pg_promote(true, 60)')
[[ $promoted == t ]] || { echo "promoting $NAME failed: $promoted" >&2; exit 1; }
# Recreated as a primary, so that a restart does not make it a standby again (the data stays in its volume).
docker stop --time 60 "$NAME" >/dev/null
docker rm "$NAME" >/dev/null
export POSTGRES_PASSWORD
ROLE=primary "$here/run.sh"
