"""MMC: the S3-compatible media store (SeaweedFS built here, or MinIO from a registry)."""

from __future__ import annotations

from deploystack.plan import backups, mediabackups
from deploystack.plan import hardening as h
from deploystack.plan.model import Build, HealthCheck, Mount, Service
from deploystack.plan.names import Role
from deploystack.plan.secrets import ref
from deploystack.plan.tenancy import s3_actions, s3_key_secrets
from deploystack.spec.models import Stack

S3_PORT = 8333
MINIO_PORT = 9000


def s3_endpoint(stack: Stack) -> str:
    return f"http://media:{S3_PORT if stack.mmc.backend == 'seaweedfs' else MINIO_PORT}"


def app_identities(stack: Stack) -> tuple[tuple[str, str], ...]:
    """Each app's S3 identity for the entrypoint: its keys as variables of their own, and one line per app
    in S3_APP_IDENTITIES (`;` between apps), `<name> <access key variable> <secret key variable> <action>...`."""
    lines, keys = [], []
    for app in stack.apc.apps:
        access, secret = s3_key_secrets(app)
        keys += [(access, ref(access)), (secret, ref(secret))]
        lines.append(" ".join((f"app-{app}", access, secret, *s3_actions(stack, app))))
    backup_identity = backups.media_identity(stack)  # the database backups' key: their bucket only
    if backup_identity is not None:
        keys += [(name, ref(name)) for name in backups.S3_KEYS]
        lines.append(backup_identity)
    snapshots = mediabackups.media_identity(stack)  # dbc.backups.media: every media bucket, no Admin
    if snapshots is not None:
        keys += [(name, ref(name)) for name in mediabackups.SECRETS]
        lines.append(snapshots)
    return (*keys, ("S3_APP_IDENTITIES", ";".join(lines)))


def plan_mmc(stack: Stack) -> tuple[list[Service], list[str]]:
    mmc = stack.mmc
    if not mmc.enabled:
        return [], []
    keys = (("S3_ACCESS_KEY", ref("S3_ACCESS_KEY")), ("S3_SECRET_KEY", ref("S3_SECRET_KEY")))
    if mmc.backend == "seaweedfs":
        service = Service(
            name="media", role=Role.MMC,
            build=Build(role="media", repo="deploystack/media", context="build/media"),
            # The first bucket holds Django's media, which the LBC serves at /media/ without signing.
            environment=(*keys, ("S3_BUCKETS", ",".join((*mmc.buckets, *backups.media_buckets(stack)))),
                         ("S3_PUBLIC_BUCKETS", mmc.buckets[0]),
                         *app_identities(stack)),
            mounts=(Mount("media-data", "/data"),),
            healthcheck=HealthCheck(test=("media-health",), start_period_s=60),
            # The entrypoint (root) writes the S3 identities for seaweed, runs weed as seaweed and stays
            # PID 1 to stop it: it signals another user's process (KILL).
            cap_add=(*h.DROP_TO_USER, h.KILL), read_only=True, tmpfs=(h.RUN, h.TMP),
            mem_limit=mmc.memory, pids_limit=h.PIDS_RUNTIME,
        )
    else:
        service = Service(
            name="media", role=Role.MMC, build=None, image=mmc.minio_image,
            environment=(("MINIO_ROOT_USER", ref("S3_ACCESS_KEY")),
                         ("MINIO_ROOT_PASSWORD", ref("S3_SECRET_KEY"))),
            command=("server", "/data"),
            mounts=(Mount("media-data", "/data"),),
            healthcheck=HealthCheck(test=("curl", "-fsS", f"http://127.0.0.1:{MINIO_PORT}/minio/health/ready")),
            # MinIO runs as root in its own volume: no capability needed.
            mem_limit=mmc.memory, pids_limit=h.PIDS_RUNTIME,
        )
    return [service], ["media-data"]
