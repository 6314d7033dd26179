"""pgBackRest on a Patroni DBC (`dbc.backups`): continuous WAL archiving and scheduled base backups into an
encrypted repository on S3-compatible storage, pgBackRest's own repository-host design.

- `backup` (this module's service) is the repository host: it alone holds the repository's S3 keys and
  cipher passphrase, runs `pgbackrest server` (TLS, client certificates) for the nodes' `archive-push` and
  `archive-get`, and a scheduler loop that takes full/differential backups from the leader over the nodes'
  own `pgbackrest server` and expires old ones. No Docker socket, no host cron.
- every `db-node-N` runs `pgbackrest server` beside Patroni (the backup pulls the data files through it)
  and archives each WAL segment to the repository host (`archive_command`).

TLS: a CA of the stack's own signs one certificate for the nodes (names `db-node-1..17`, common name
NODE_CN) and one for the backup service (BACKUP_CN); each server admits only the other's common name
(`tls-server-auth`). The S3 store: by default the bucket `backups` of the stack's SeaweedFS with an S3
identity of its own, limited to that bucket (same host: not a disaster copy); or `dbc.backups.target`.
pgBackRest 2.55 (Debian 13) speaks S3 over HTTPS only: the backup service reaches its own SeaweedFS
(plain HTTP on the private network, like the apps) through a TLS tunnel on its loopback (stunnel).
"""

from __future__ import annotations

import re

from deploystack.plan import hardening as h
from deploystack.plan.cdc import EGRESS_NETWORK
from deploystack.plan.model import Build, ConfigFile, HealthCheck, Service
from deploystack.plan.names import DB_ROUTER, Role
from deploystack.plan.names import NODE_PREFIX as NODE_PREFIX  # render/backuptls.py names the nodes so
from deploystack.plan.secrets import ref
from deploystack.spec.models import BACKUP_BUCKET, Backups, Stack

SERVICE = "backup"
STANZA = "db"
CONFIG_DIR = "config/backup"
NODE_CONFIG_DIR = "config/patroni"  # plan/patroni.py CONFIG_DIR: the nodes' mounted folder
CONFIG_MOUNT = "/etc/deploystack"
CONFIG_NAME = "pgbackrest.conf"
PGDATA = "/var/lib/postgresql/data"
TLS_PORT = 8432  # pgBackRest's TLS server, on every node and on the backup service
NODE_CN, BACKUP_CN = "db-node", "backup"
MAX_NODES = 17  # dbc.replicas' maximum + 1: the nodes' certificate names them all, so scaling keeps it
CIPHER_SECRET = "PGBACKREST_CIPHER_PASS"
S3_KEYS = ("S3_BACKUP_ACCESS_KEY", "S3_BACKUP_SECRET_KEY")  # the local store's identity for the repository
TARGET_KEYS = ("BACKUP_TARGET_ACCESS_KEY", "BACKUP_TARGET_SECRET_KEY")  # an off-host target's, from outside
S3_IDENTITY = "deploystack-backups"
LOCAL_TUNNEL_PORT = 8443  # the backup service's loopback TLS tunnel to SeaweedFS
LOCAL_S3_PORT = 8333
CHECK_INTERVAL_S = 10  # how often the scheduler looks at what is due
# Files of the TLS material, relative to the output: the CA key stays on the host, in the output only.
CA_CERT, CA_KEY = "backups/ca.crt", "backups/ca.key"
NODE_TLS = (f"{NODE_CONFIG_DIR}/backup-tls/ca.crt", f"{NODE_CONFIG_DIR}/backup-tls/node.crt",
            f"{NODE_CONFIG_DIR}/backup-tls/node.key")
BACKUP_TLS = (f"{CONFIG_DIR}/tls/ca.crt", f"{CONFIG_DIR}/tls/backup.crt", f"{CONFIG_DIR}/tls/backup.key")
# Where the entrypoints copy the certificate and key to, owned by postgres (the mounted key is the host's).
RUN_TLS = "/run/postgresql/backup-tls"

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAMED = {"hourly": "1h", "daily": "1d", "weekly": "1w"}


def enabled(stack: Stack) -> bool:
    return stack.dbc.ha == "patroni" and stack.dbc.backups is not None


def seconds(schedule: str) -> int:
    """A schedule of the spec (hourly, daily, weekly, or an interval: 10m, 6h, 2d, 1w) in seconds."""
    interval = _NAMED.get(schedule, schedule)
    match = re.fullmatch(r"([1-9][0-9]*)([mhdw])", interval)
    if match is None:
        raise ValueError(f"not a schedule: {schedule!r}")  # the spec validated it: a bug if reached
    return int(match.group(1)) * _UNITS[match.group(2)]


def local_store(stack: Stack) -> bool:
    """The repository is on the stack's own SeaweedFS (same host), not on an off-host target."""
    return stack.dbc.backups is not None and stack.dbc.backups.target is None


def secret_names(stack: Stack) -> tuple[str, ...]:
    """Generated secrets: the repository's cipher passphrase, and the local store's S3 identity."""
    if not enabled(stack):
        return ()
    return (CIPHER_SECRET, *(S3_KEYS if local_store(stack) else ()))


def media_identity(stack: Stack) -> str | None:
    """The media entrypoint's identity line for the repository's key: the bucket `backups`, nothing else."""
    if not enabled(stack) or not local_store(stack):
        return None
    actions = (f"{action}:{BACKUP_BUCKET}" for action in ("Read", "List", "Write", "Tagging"))
    return " ".join((S3_IDENTITY, *S3_KEYS, *actions))


def needs_egress(stack: Stack) -> bool:
    """An off-host target is out of the private network's reach (internal: no route out)."""
    return enabled(stack) and not local_store(stack)


def media_buckets(stack: Stack) -> tuple[str, ...]:
    return (BACKUP_BUCKET,) if enabled(stack) and local_store(stack) else ()


ARCHIVE_PARAMETERS = ("archive_mode", "archive_command", "archive_timeout")


def archive_parameters(stack: Stack) -> dict[str, object]:
    """PostgreSQL settings for continuous archiving (Patroni's parameters, on every node): the
    ARCHIVE_PARAMETERS, or none without dbc.backups."""
    backups = stack.dbc.backups
    if not enabled(stack) or backups is None:
        return {}
    return dict(zip(ARCHIVE_PARAMETERS, ("on", f"pgbackrest --stanza={STANZA} archive-push %p",
                                         f"{backups.archive_timeout}s"), strict=True))


def node_names(stack: Stack) -> list[str]:
    return [f"{NODE_PREFIX}{n}" for n in range(1, stack.dbc.replicas + 2)]


def _tls_server(ca: str, allowed_cn: str) -> list[tuple[str, str]]:
    return [
        ("tls-server-address", "*"),
        ("tls-server-port", str(TLS_PORT)),
        ("tls-server-ca-file", ca),
        ("tls-server-cert-file", f"{RUN_TLS}/cert.crt"),
        ("tls-server-key-file", f"{RUN_TLS}/cert.key"),
        ("tls-server-auth", f"{allowed_cn}={STANZA}"),
    ]


_LOGS = [("log-level-console", "info"), ("log-level-stderr", "warn"), ("log-level-file", "off"),
         ("log-timestamp", "n")]


def node_conf(stack: Stack) -> dict[str, object]:
    """pgbackrest.conf of every node: the repository is on the backup service (TLS, client certificate)."""
    ca = f"{CONFIG_MOUNT}/backup-tls/ca.crt"
    client = [("repo1-host", SERVICE), ("repo1-host-type", "tls"), ("repo1-host-port", str(TLS_PORT)),
              ("repo1-host-ca-file", ca), ("repo1-host-cert-file", f"{RUN_TLS}/cert.crt"),
              ("repo1-host-key-file", f"{RUN_TLS}/cert.key")]
    # A repository host that does not answer fails archive-push within io-timeout (default 60 s, retried):
    # PostgreSQL's archiver then reports it and retries sooner once the backup service is back.
    return {"sections": [
        ("global", [*client, ("io-timeout", "15"), *_tls_server(ca, BACKUP_CN), *_LOGS]),
        (STANZA, [("pg1-path", PGDATA), ("pg1-socket-path", "/run/postgresql"), ("pg1-port", "5432")]),
    ]}


def repository(stack: Stack) -> list[tuple[str, str]]:
    """The repo1-* options: where the repository is, its encryption and retention."""
    backups = stack.dbc.backups
    assert backups is not None
    target = backups.target
    options = [("repo1-type", "s3"), ("repo1-path", f"/{stack.project}")]
    if target is None:
        options += [("repo1-s3-bucket", BACKUP_BUCKET), ("repo1-s3-endpoint", "media"),
                    ("repo1-s3-region", "us-east-1"), ("repo1-s3-uri-style", "path"),
                    # The loopback tunnel to SeaweedFS (pgBackRest 2.55 speaks S3 over HTTPS only).
                    ("repo1-storage-host", "127.0.0.1"), ("repo1-storage-port", str(LOCAL_TUNNEL_PORT)),
                    ("repo1-storage-verify-tls", "n")]
    else:
        host, _, port = target.endpoint.partition(":")
        options += [("repo1-s3-bucket", target.bucket), ("repo1-s3-endpoint", host),
                    ("repo1-s3-region", target.region),
                    ("repo1-s3-uri-style", "path" if target.path_style else "host"),
                    ("repo1-storage-verify-tls", "y" if target.verify_tls else "n")]
        options += [("repo1-storage-port", port)] if port else []
    options += [("repo1-cipher-type", "aes-256-cbc"),
                ("repo1-retention-full-type", "count"), ("repo1-retention-full", str(backups.keep_full))]
    options += [("repo1-retention-diff", str(backups.keep_diff))] if backups.keep_diff is not None else []
    return options


def backup_conf(stack: Stack) -> dict[str, object]:
    """pgbackrest.conf of the backup service: the repository, its TLS server for the nodes, and every node
    as a pgN host (pgBackRest backs up from the one that is primary)."""
    ca = f"{CONFIG_MOUNT}/tls/ca.crt"
    nodes: list[tuple[str, str]] = []
    for index, node in enumerate(node_names(stack), start=1):
        nodes += [(f"pg{index}-host", node), (f"pg{index}-host-type", "tls"),
                  (f"pg{index}-host-port", str(TLS_PORT)), (f"pg{index}-host-ca-file", ca),
                  (f"pg{index}-host-cert-file", f"{RUN_TLS}/cert.crt"),
                  (f"pg{index}-host-key-file", f"{RUN_TLS}/cert.key"),
                  (f"pg{index}-path", PGDATA), (f"pg{index}-socket-path", "/run/postgresql")]
    general = [("start-fast", "y"), ("compress-type", "zst"), ("process-max", "2"), ("archive-timeout", "120")]
    return {"sections": [
        ("global", [*repository(stack), *general, *_tls_server(ca, NODE_CN), *_LOGS]),
        (STANZA, nodes),
    ]}


def schedule_env(backups: Backups) -> tuple[tuple[str, str], ...]:
    return (("BACKUP_FULL_S", str(seconds(backups.full))),
            ("BACKUP_DIFF_S", str(seconds(backups.diff)) if backups.diff else "0"),
            ("BACKUP_CHECK_S", str(CHECK_INTERVAL_S)))


def backup_env(stack: Stack) -> tuple[tuple[str, str], ...]:
    backups = stack.dbc.backups
    assert backups is not None
    access, secret = S3_KEYS if local_store(stack) else TARGET_KEYS
    return (
        ("PGBACKREST_CONFIG", f"{CONFIG_MOUNT}/{CONFIG_NAME}"),
        ("PGBACKREST_STANZA", STANZA),
        ("PGBACKREST_REPO1_S3_KEY", ref(access)),
        ("PGBACKREST_REPO1_S3_KEY_SECRET", ref(secret)),
        ("PGBACKREST_REPO1_CIPHER_PASS", ref(CIPHER_SECRET)),
        # The scheduler's record of row counts after each backup (what `db verify` compares with) is read
        # through the router as the superuser: every database, every table.
        ("PGHOST", DB_ROUTER), ("PGPORT", "5432"), ("PGUSER", "postgres"), ("PGDATABASE", "postgres"),
        ("PGPASSWORD", ref("DB_SUPERUSER_PASSWORD")), ("PGCONNECT_TIMEOUT", "5"),
        ("BACKUP_LOCAL_S3", f"media:{LOCAL_S3_PORT}" if local_store(stack) else ""),
        *schedule_env(backups),
    )


def node_env(stack: Stack) -> tuple[tuple[str, str], ...]:
    """What every node's environment gets: pgBackRest's config file (archive_command inherits it)."""
    if not enabled(stack):
        return ()
    return (("PGBACKREST_CONFIG", f"{CONFIG_MOUNT}/{CONFIG_NAME}"), ("PGBACKREST_STANZA", STANZA))


def plan_backups(stack: Stack, release_base: tuple[tuple[str, str], ...]) -> tuple[list[Service], list[ConfigFile]]:
    """The backup service and the nodes' and its pgbackrest.conf (the nodes' in the nodes' config folder)."""
    if not enabled(stack):
        return [], []
    from deploystack.plan import mediabackups  # it builds on this module's names

    media = local_store(stack) or mediabackups.enabled(stack)
    depends = (node_names(stack)[0], *(("media",) if media else ()))
    service = Service(
        name=SERVICE, role=Role.DBC,
        build=Build(role="backup", repo="deploystack/backup", context="build/backup", args=release_base),
        environment=(*backup_env(stack), *mediabackups.env(stack)), depends_on=depends, config_dir=CONFIG_DIR,
        networks=("private", *((EGRESS_NETWORK,) if needs_egress(stack) else ())),
        healthcheck=HealthCheck(test=("backup-health",), interval_s=10, start_period_s=300),
        # The entrypoint (root) copies its key for postgres, then runs everything as postgres.
        cap_add=h.DROP_TO_USER, mem_limit="512m", pids_limit=h.PIDS,
    )
    template = "backup/templates/pgbackrest.conf.j2"
    configs = [ConfigFile(f"{NODE_CONFIG_DIR}/{CONFIG_NAME}", template, node_conf(stack)),
               ConfigFile(f"{CONFIG_DIR}/{CONFIG_NAME}", template, backup_conf(stack))]
    return [service], configs
