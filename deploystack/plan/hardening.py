"""What every container is allowed: capabilities, writable paths, process counts, log rotation.

Every service drops every capability and cannot gain privileges (setuid binaries, file capabilities):
`Service` says so by default. A role adds back only what its entrypoint needs; each capability below
says what for. Root without DAC_OVERRIDE cannot write where the daemon user owns the folder, without
CHOWN cannot hand a folder to it, without SETUID/SETGID cannot drop to it (setpriv), without KILL
cannot signal it. Read-only root file systems get tmpfs mounts for what must be written.
"""

from __future__ import annotations

from deploystack.plan.model import LogRotation, Tmpfs
from deploystack.spec.models import Stack

# Capability -> why a role adds it back (docs/security.md prints the same table).
CHOWN = "CHOWN"  # the entrypoint (root) hands its data and run folders to the daemon's user
DAC_OVERRIDE = "DAC_OVERRIDE"  # the entrypoint (root) writes into folders the daemon's user owns
FOWNER = "FOWNER"  # the entrypoint (root) chmods files the daemon's user owns (keys, cookies)
SETUID = "SETUID"  # dropping to the daemon's user (setpriv, memcached -u, nginx's workers)
SETGID = "SETGID"  # the same, for its groups
KILL = "KILL"  # a root process signals a child that runs as another user (weed)
NET_BIND_SERVICE = "NET_BIND_SERVICE"  # the LBC's nginx listens on 80 and 443 (engines before 20.10)
NET_ADMIN = "NET_ADMIN"  # fail2ban bans with iptables in the LBC's own network namespace

DROP_TO_USER = (CHOWN, DAC_OVERRIDE, FOWNER, SETUID, SETGID)  # an entrypoint that prepares, then drops

# tmpfs sizes are upper bounds (and count against the container's memory limit only when used).
RUN = Tmpfs("/run", "16m", "0755")
TMP = Tmpfs("/tmp", "64m", "1777")

# Most processes and threads a container may have. Generous: thread counts of Erlang, Go and nginx grow
# with the host's cores; the limit stops a fork bomb, not a busy server.
PIDS_SMALL = 128  # redis, memcached
PIDS = 512  # the LBC, the apps and their workers, migrations
PIDS_RUNTIME = 1024  # Erlang (RabbitMQ), Go (SeaweedFS, MinIO), the CDC running deploys
PIDS_JVM = 4096  # Elasticsearch


def log_rotation(stack: Stack) -> LogRotation:
    return LogRotation(max_size=stack.logging.max_size, max_file=stack.logging.max_file)


def db_pids(max_connections: int) -> int:
    """A backend process per connection, plus PostgreSQL's own (checkpointer, WAL senders, autovacuum...)."""
    return max_connections + 128
