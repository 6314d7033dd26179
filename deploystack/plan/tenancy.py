"""One identity per app (issue 14, item 3): its PostgreSQL role and database, its Django secret key, its
S3 key and what that key may do, its RabbitMQ user and vhost, its Redis ACL user and key prefix.

Pure: names derived from the spec, and the psql script that `up` runs on the primary (engine/provision.py)
to make the roles and databases, and to migrate a stack made before apps had their own.
"""

from __future__ import annotations

from deploystack.plan.model import AppDatabase, Tenancy
from deploystack.spec.models import Stack
from deploystack.spec.models import db_role_name as role_name

APPS_GROUP = "deploystack_apps"  # every app role is a member: pg_hba admits this group only, over TCP
# Rights on the tables and sequences of a shared database, given both ways between the apps sharing it.
TABLE_RIGHTS = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
SEQUENCE_RIGHTS = "USAGE, SELECT, UPDATE"
# Set on the legacy database once every app database has been made from it: an app added later gets an
# empty database, not a copy of the old shared data.
MIGRATED = "deploystack: copied into each app's own database; kept as a snapshot"


def _suffix(app: str) -> str:
    return app.upper().replace("-", "_")


def db_password_secret(app: str) -> str:
    return f"DB_PASSWORD_{_suffix(app)}"


def secret_key_secret(app: str) -> str:
    return f"DJANGO_SECRET_KEY_{_suffix(app)}"


def rabbitmq_password_secret(app: str) -> str:
    """The .env name of an app's RabbitMQ password; its user and vhost are both named like the app."""
    return f"RABBITMQ_PASSWORD_{_suffix(app)}"


def redis_password_secret(app: str) -> str:
    """The .env name of an app's Redis password; its ACL user is named like the app."""
    return f"REDIS_PASSWORD_{_suffix(app)}"


def redis_key_prefix(app: str) -> str:
    """What every key (and pub/sub channel) of an app starts with: its ACL user may touch nothing else."""
    return f"{app}:"


REDIS_BROKER_DB = 2  # Celery's queue when Redis is the broker: apart from the cache (0) and the results (1)
# kombu PSUBSCRIBEs to each fanout exchange's channel, `/<db>.<exchange>[/<routing key>]` under the key
# prefix, and Redis lets a user PSUBSCRIBE only to a pattern its ACL names literally (`&<app>:*` covers
# SUBSCRIBE and PUBLISH, not that). Celery's fanout exchanges on Redis: the workers' remote control
# (`celery inspect ping`, the worker health check), and the events (a Redis `celeryev` is fanout): the
# workers' gossip binds `worker.#`, `celery events` and Flower `#`, which kombu turns into `*`.
CELERY_FANOUT_TOPICS = ("celery.pidbox", "celeryev/worker.*", "celeryev/*")


def redis_fanout_channels(app: str) -> tuple[str, ...]:
    """The fanout channels an app's workers PSUBSCRIBE to on a Redis broker."""
    return tuple(f"{redis_key_prefix(app)}/{REDIS_BROKER_DB}.{topic}" for topic in CELERY_FANOUT_TOPICS)


def s3_key_secrets(app: str) -> tuple[str, str]:
    """The .env names of an app's own S3 access and secret key."""
    return f"S3_ACCESS_KEY_{_suffix(app)}", f"S3_SECRET_KEY_{_suffix(app)}"


def s3_actions(stack: Stack, app: str) -> tuple[str, ...]:
    """SeaweedFS identity actions of an app's key: the media bucket (public through the LBC anyway) read
    and listed whole, written only under `<app>/`; its own buckets (apc.apps.<app>.buckets) wholly."""
    media = stack.mmc.buckets[0]
    own = stack.apc.apps[app].buckets
    return (f"Read:{media}", f"List:{media}", f"Write:{media}/{app}/*", f"Tagging:{media}/{app}/*",
            *(f"{action}:{bucket}" for bucket in own for action in ("Read", "List", "Write", "Tagging")))


def app_databases(stack: Stack) -> tuple[AppDatabase, ...]:
    databases = []
    for name, app in stack.apc.apps.items():
        owner = role_name(app.database.shares or name)
        databases.append(AppDatabase(app=name, role=role_name(name), database=owner,
                                     password_secret=db_password_secret(name), owner=owner))
    return tuple(databases)


def plan_tenancy(stack: Stack) -> Tenancy:
    return Tenancy(databases=app_databases(stack), legacy_user=stack.dbc.user, legacy_database=stack.dbc.database)


def database_of(tenancy: Tenancy, app: str) -> AppDatabase:
    for database in tenancy.databases:
        if database.app == app:
            return database
    raise KeyError(app)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _if_database(name: str, exists: bool) -> str:
    return f"{'' if exists else 'NOT '}EXISTS (SELECT FROM pg_database WHERE datname = {_literal(name)})"


def provision_sql(tenancy: Tenancy) -> str:
    """A psql script, run as postgres on the primary, idempotent: what it finds made stays as it is.

    Passwords come from the environment of the exec (`\\getenv`), never from this text. The legacy
    layout (every app on `legacy_database`, owned by the superuser `legacy_user`) is migrated once: the
    legacy role can no longer log in, the old database takes no more connections (so no write goes
    there after it is copied), each app database that does not exist yet is made as a copy of it whose
    objects then belong to the app, and the old database stays as it was, a snapshot, owned by postgres.
    """
    legacy_user, legacy_db = tenancy.legacy_user, tenancy.legacy_database
    unmigrated = (f"EXISTS (SELECT FROM pg_database d WHERE d.datname = {_literal(legacy_db)} "
                  f"AND shobj_description(d.oid, 'pg_database') IS DISTINCT FROM {_literal(MIGRATED)})")
    owners = list(dict.fromkeys(d.owner for d in tenancy.databases))
    lines = ["\\set ON_ERROR_STOP on", "\\set QUIET on", "\\pset tuples_only on", "\\o /dev/null"]
    lines += [f"\\getenv pw_{d.role} {d.password_secret}" for d in tenancy.databases]
    lines.append(f"SELECT 'CREATE ROLE {APPS_GROUP} NOLOGIN' WHERE NOT EXISTS "
                 f"(SELECT FROM pg_roles WHERE rolname = {_literal(APPS_GROUP)}) \\gexec")
    for d in tenancy.databases:
        lines += [
            f"SELECT 'CREATE ROLE {_ident(d.role)}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = {_literal(d.role)}) \\gexec",
            f"ALTER ROLE {_ident(d.role)} WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION "
            f"NOBYPASSRLS INHERIT PASSWORD :'pw_{d.role}';",
            f"GRANT {APPS_GROUP} TO {_ident(d.role)};",
        ]
    for role, secret in tenancy.replication_roles:
        lines += [
            f"\\getenv pw_replication_{role} {secret}",
            f"SELECT 'CREATE ROLE {_ident(role)}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = {_literal(role)}) \\gexec",
            # Streaming only: no database, no group, no rights on any table (pg_hba admits it for replication).
            f"ALTER ROLE {_ident(role)} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS "
            f"NOINHERIT PASSWORD :'pw_replication_{role}';",
        ]
    # The legacy layout: its role stops logging in and its database stops taking connections before it
    # is copied, so the old replicas' writes fail rather than land where nothing reads them any more.
    missing = " OR ".join(_if_database(o, exists=False) for o in owners) or "false"
    lines += [
        f"SELECT format('ALTER ROLE %I NOSUPERUSER NOCREATEROLE NOCREATEDB NOLOGIN', rolname) FROM pg_roles "
        f"WHERE rolname = {_literal(legacy_user)} AND (rolsuper OR rolcanlogin) \\gexec",
        f"SELECT format('ALTER DATABASE %I ALLOW_CONNECTIONS false', datname) FROM pg_database "
        f"WHERE datname = {_literal(legacy_db)} AND datallowconn AND {unmigrated} AND ({missing}) \\gexec",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {_literal(legacy_db)} "
        f"AND pid <> pg_backend_pid();",
    ]
    for owner in owners:
        lines += [
            f"SELECT 'CREATE DATABASE {_ident(owner)} TEMPLATE {_ident(legacy_db)} OWNER {_ident(owner)}' "
            f"WHERE {_if_database(owner, exists=False)} AND {unmigrated} \\gexec",
            f"SELECT 'CREATE DATABASE {_ident(owner)} OWNER {_ident(owner)}' "
            f"WHERE {_if_database(owner, exists=False)} \\gexec",
            f"ALTER DATABASE {_ident(owner)} OWNER TO {_ident(owner)};",
            f"REVOKE ALL ON DATABASE {_ident(owner)} FROM PUBLIC;",
        ]
    for d in tenancy.databases:
        if d.role != d.owner:
            lines.append(f"GRANT CONNECT, TEMPORARY ON DATABASE {_ident(d.owner)} TO {_ident(d.role)};")
    for owner in owners:
        sharing = [d.role for d in tenancy.databases if d.owner == owner]
        lines += [f"\\connect {owner}", "\\set QUIET on", "\\o /dev/null",
                  # What the legacy role owned here (a copy of the shared database) is the app's now.
                  f"SELECT format('REASSIGN OWNED BY %I TO %I', rolname, {_literal(owner)}) FROM pg_roles "
                  f"WHERE rolname = {_literal(legacy_user)} \\gexec"]
        # Apps sharing a database read and write each other's tables there (each keeps owning its own).
        for role in sharing:
            others = [r for r in sharing if r != role]
            if not others:
                continue
            lines.append(f"GRANT USAGE, CREATE ON SCHEMA public TO {_ident(role)};")
            for other in others:
                lines += [
                    f"SELECT format('GRANT {TABLE_RIGHTS} ON %I.%I TO {_ident(role)}', schemaname, tablename) "
                    f"FROM pg_tables WHERE schemaname = 'public' AND tableowner = {_literal(other)} \\gexec",
                    f"SELECT format('GRANT {SEQUENCE_RIGHTS} ON SEQUENCE %I.%I TO {_ident(role)}', "
                    f"schemaname, sequencename) FROM pg_sequences WHERE schemaname = 'public' "
                    f"AND sequenceowner = {_literal(other)} \\gexec",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {_ident(other)} IN SCHEMA public "
                    f"GRANT {TABLE_RIGHTS} ON TABLES TO {_ident(role)};",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {_ident(other)} IN SCHEMA public "
                    f"GRANT {SEQUENCE_RIGHTS} ON SEQUENCES TO {_ident(role)};",
                ]
    lines += [
        "\\connect postgres", "\\set QUIET on", "\\o /dev/null",
        # The snapshot of the legacy database: REASSIGN OWNED above handed it to an app; it is nobody's.
        f"SELECT format('ALTER DATABASE %I OWNER TO postgres', datname) FROM pg_database "
        f"WHERE datname = {_literal(legacy_db)} \\gexec",
        f"SELECT format('COMMENT ON DATABASE %I IS %L', datname, {_literal(MIGRATED)}) FROM pg_database "
        f"WHERE datname = {_literal(legacy_db)} \\gexec",
        f"SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', datname) FROM pg_database "
        f"WHERE datname IN ('postgres', 'template1', {_literal(legacy_db)}) \\gexec",
    ]
    return "\n".join(lines) + "\n"
