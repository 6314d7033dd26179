"""`db upgrade`'s pure part (plan/upgrade.py): when a stack's data waits for the upgrade, the steps shown
before it asks, the roles' script made fit for a Patroni cluster, and the row counts compared."""

from __future__ import annotations

from pathlib import Path

from deploystack.plan import upgrade as u
from deploystack.spec import load_stack
from tests.conftest import write_spec

SPEC = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
dbc:
  ha: patroni
  replicas: 2
"""

# pg_dumpall --globals-only of a PostgreSQL 15 stack (as deploystack makes it), trimmed.
GLOBALS = '''\
SET default_transaction_read_only = off;

--
-- Roles
--

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER NOLOGIN PASSWORD 'SCRAM-SHA-256$4096:a$b:c';
CREATE ROLE backend;
ALTER ROLE backend WITH NOSUPERUSER INHERIT LOGIN NOREPLICATION PASSWORD 'SCRAM-SHA-256$4096:d$e:f';
CREATE ROLE deploystack_apps;
ALTER ROLE deploystack_apps WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "Odd ""name""";
ALTER ROLE "Odd ""name""" WITH LOGIN;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$x';
CREATE ROLE replicator;
ALTER ROLE replicator WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN REPLICATION NOBYPASSRLS PASSWORD 'old';
ALTER ROLE replicator SET statement_timeout TO '1s';

--
-- Role memberships
--

GRANT deploystack_apps TO backend GRANTED BY postgres;
'''


def test_pending_only_while_the_old_volume_is_alone() -> None:
    assert u.pending("shop", ["shop_db-primary-data", "shop_db-replica-1-data", "shop_lbc-certs"])
    # The upgrade made the nodes' volumes (the old ones are kept): nothing pending any more.
    assert not u.pending("shop", ["shop_db-primary-data", "shop_db-node-1-data"])
    assert not u.pending("shop", ["shop_db-node-1-data"])  # a new stack on Patroni
    assert not u.pending("shop", [])  # nothing made yet
    assert not u.pending("shop", ["shopping_db-primary-data"])  # another project's


def test_pending_message_names_the_command_and_the_volume() -> None:
    message = u.pending_message("shop")
    assert "`deploystack db upgrade`" in message
    assert "shop_db-primary-data" in message
    assert "remove `ha: patroni`" in message


def test_steps_name_every_service_and_the_folder(tmp_path: Path) -> None:
    stack = load_stack(write_spec(tmp_path, SPEC))
    steps = u.steps(stack, ["shop-backend-1"], u.old_services(stack), "/out/.deploystack/db-upgrade-X")
    assert len(steps) == 6
    assert "shop-backend-1" in steps[0]
    assert "/out/.deploystack/db-upgrade-X" in steps[1] and "PostgreSQL 15" in steps[1]
    assert "db-primary, db-replica-1, db-replica-2" in steps[2]
    assert "etcd-1, etcd-2, etcd-3, db-node-1, db-node-2, db-node-3, db-router" in steps[3]
    assert "none running" in u.steps(stack, [], ["db-primary"], "f")[0]


def test_globals_skip_existing_and_patroni_roles() -> None:
    script = u.restorable_globals(GLOBALS, ["postgres", "replicator", "backend"])
    lines = script.splitlines()
    # The apps' roles and one made by hand come with their attributes and password hashes.
    assert "CREATE ROLE app;" in lines
    assert "CREATE ROLE deploystack_apps;" in lines
    assert 'CREATE ROLE "Odd ""name""";' in lines
    assert any(line.startswith("ALTER ROLE backend WITH") and "SCRAM-SHA-256$4096:d$e:f" in line for line in lines)
    assert "GRANT deploystack_apps TO backend GRANTED BY postgres;" in lines
    # A role the new cluster has already is not created again (psql would stop); Patroni's own are its own.
    assert "CREATE ROLE backend;" not in lines
    assert not any("postgres" in line and "ROLE" in line for line in lines if not line.startswith("GRANT"))
    assert not any("replicator" in line for line in lines)


def test_globals_keep_a_role_named_like_patronis_but_quoted_differently() -> None:
    script = u.restorable_globals('CREATE ROLE "Postgres";\nALTER ROLE "Postgres" WITH LOGIN;\n', ["postgres"])
    assert script == 'CREATE ROLE "Postgres";\nALTER ROLE "Postgres" WITH LOGIN;\n'


def test_mismatches_name_each_table() -> None:
    before = {"backend": {"public.notes_note": 40, "public.django_migrations": 20}, "postgres": {}}
    assert u.mismatches(before, {"backend": {"public.notes_note": 40, "public.django_migrations": 20}}) == []
    assert u.mismatches(before, {"backend": {"public.notes_note": 39}}) == [
        "backend.public.django_migrations: 20 -> missing", "backend.public.notes_note: 40 -> 39"]
    assert u.total_rows(before) == (2, 60)


def test_removal_note_lists_the_old_volumes() -> None:
    old = u.old_volumes_of("shop", ["shop_db-replica-1-data", "shop_db-node-1-data", "shop_db-primary-data",
                                    "shop_etcd-1-data", "shopping_db-primary-data", "shop_db-replica-x-data"])
    assert old == ["shop_db-primary-data", "shop_db-replica-1-data"]
    note = u.removal_note(old, "/out/.deploystack/db-upgrade-X")
    assert "docker volume rm shop_db-primary-data shop_db-replica-1-data" in note
    assert "/out/.deploystack/db-upgrade-X" in note
