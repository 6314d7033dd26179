#!/usr/bin/env bash
# Start (or start again) the offsite replica on this host with plain docker: build the image from
# image/ (Debian packages only), make the data volume, run the container. Idempotent.
# Settings (environment, defaults in bundle.env): NAME (container; its volume is NAME-data), IMAGE,
# BASE_IMAGE (the Debian image to build from: bookworm for PostgreSQL 15, trixie for 17), PG_MAJOR (the
# stack's PostgreSQL major: 15, or 17 on a Patroni stack), PUBLISH (ADDRESS:PORT for read-only clients, or
# empty for none), ROLE (replica; promote.sh sets primary).
set -o errexit -o pipefail -o nounset
here=$(cd "$(dirname "$0")" && pwd)
source "$here/bundle.env"
ROLE=${ROLE:-replica}

docker build --quiet --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PG_MAJOR="${PG_MAJOR:-15}" \
    --tag "$IMAGE" "$here/image" >/dev/null
docker volume create "$NAME-data" >/dev/null
if docker container inspect "$NAME" >/dev/null 2>&1; then
    docker start "$NAME" >/dev/null
else
    publish=()
    [[ -z $PUBLISH ]] || publish=(--publish "$PUBLISH:5432")
    docker run --detach --name "$NAME" --restart unless-stopped \
        --env-file "$here/replica.env" --env DB_ROLE="$ROLE" \
        --volume "$NAME-data:/var/lib/postgresql/data" \
        --mount "type=bind,source=$here/config,target=/etc/deploystack,readonly" \
        "${publish[@]}" --stop-timeout 60 \
        --health-cmd db-health --health-interval 5s --health-timeout 5s --health-retries 5 \
        --health-start-period 600s "$IMAGE" >/dev/null
fi
echo "$NAME is starting as a $ROLE; docker inspect --format '{{.State.Health.Status}}' $NAME says when it is healthy"
