"""Scheduled media snapshots (`dbc.backups.media`): the backup service copies every media bucket, S3 to S3
with rclone (Debian 13's), into the store of the database backups: the bucket `backups` of the stack's own
SeaweedFS by default, or `dbc.backups.target` (off-host).

Layout in that store, beside pgBackRest's repository (`<project>/archive`, `<project>/backup`):
`<project>/media/<YYYYMMDDTHHMMSSZ>/<bucket>/<key>` holds one snapshot's objects, and
`<project>/media/<YYYYMMDDTHHMMSSZ>.json` its manifest, written last (a snapshot without one is unfinished
and is removed by the next run). Each run copies server-side from the previous snapshot what did not change
(`--copy-dest`), so an unchanged object costs one request on the target, not its bytes again. Retention
keeps the `keep` newest snapshots. Listing reads the store only: a fresh stack with the same spec sees the
snapshots of the one it replaces.

The backup service reads and writes the media buckets with an S3 identity of its own (every mmc bucket;
no Admin: it cannot make or drop buckets). rclone's remotes `media` and `target` are defined by environment
variables (RCLONE_CONFIG_<REMOTE>_<OPTION>): no config file holds a key.
"""

from __future__ import annotations

from deploystack.plan import backups
from deploystack.plan.secrets import ref
from deploystack.spec.models import BACKUP_BUCKET, Stack

SECRETS = ("S3_MEDIA_BACKUP_ACCESS_KEY", "S3_MEDIA_BACKUP_SECRET_KEY")
IDENTITY = "deploystack-media-backups"
MEDIA_S3 = "http://media:8333"  # plan/mmc.py s3_endpoint with SeaweedFS (that module imports this one's peers)
STATE = "/run/postgresql/backup-state-media"


def enabled(stack: Stack) -> bool:
    return backups.enabled(stack) and stack.dbc.backups is not None and stack.dbc.backups.media is not None


def buckets(stack: Stack) -> tuple[str, ...]:
    """What a snapshot copies: every mmc bucket (an app's own buckets are among them)."""
    return tuple(stack.mmc.buckets)


def secret_names(stack: Stack) -> tuple[str, ...]:
    return SECRETS if enabled(stack) else ()


def media_identity(stack: Stack) -> str | None:
    """The media entrypoint's identity line for the snapshots: read, list and write every media bucket."""
    if not enabled(stack):
        return None
    actions = (f"{action}:{bucket}" for bucket in buckets(stack) for action in ("Read", "List", "Write", "Tagging"))
    return " ".join((IDENTITY, *SECRETS, *actions))


def store_path(stack: Stack) -> str:
    """Where the snapshots are on rclone's remote `target`: bucket/prefix."""
    backup = stack.dbc.backups
    assert backup is not None
    bucket = backup.target.bucket if backup.target is not None else BACKUP_BUCKET
    return f"{bucket}/{stack.project}/media"


def _remote(name: str, endpoint: str, access: str, secret: str, region: str, path_style: bool) -> list[tuple[str, str]]:
    prefix = f"RCLONE_CONFIG_{name.upper()}_"
    return [(prefix + key, value) for key, value in (
        ("TYPE", "s3"), ("PROVIDER", "Other"), ("ENDPOINT", endpoint), ("REGION", region),
        ("ACCESS_KEY_ID", ref(access)), ("SECRET_ACCESS_KEY", ref(secret)),
        ("FORCE_PATH_STYLE", "true" if path_style else "false"),
        # The buckets exist (made by the media entrypoint, or the target's own): never try to create one.
        ("NO_CHECK_BUCKET", "true"),
    )]


def env(stack: Stack) -> tuple[tuple[str, str], ...]:
    """The backup service's environment for the media snapshots (nothing without dbc.backups.media)."""
    backup = stack.dbc.backups
    if not enabled(stack) or backup is None or backup.media is None:
        return ()
    target = backup.target
    pairs = _remote("media", MEDIA_S3, *SECRETS, "us-east-1", True)
    if target is None:
        pairs += _remote("target", MEDIA_S3, *backups.S3_KEYS, "us-east-1", True)
    else:
        pairs += _remote("target", f"https://{target.endpoint}", *backups.TARGET_KEYS, target.region,
                         target.path_style)
        pairs += [] if target.verify_tls else [("RCLONE_NO_CHECK_CERTIFICATE", "true")]
    return (*pairs,
            ("MEDIA_BACKUP_S", str(backups.seconds(backup.media.schedule))),
            ("MEDIA_BACKUP_KEEP", str(backup.media.keep)),
            ("MEDIA_BACKUP_BUCKETS", ",".join(buckets(stack))),
            ("MEDIA_BACKUP_PATH", store_path(stack)))
