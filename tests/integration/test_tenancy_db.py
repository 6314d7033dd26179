"""The apps' roles on a real PostgreSQL (the db image `up` builds), provisioned by `up`'s own engine step:

- a database in the layout every stack had before (one superuser role `app` owning one database `app`
  where all apps' tables live, made as compose/db/entrypoint on main made it), with rows;
- provisioning migrates it: every row still there, in each app's own database, owned by the app's role;
  the old role can no longer log in and is no superuser; the old database takes no connections;
- over TCP, as the apps connect: each role reads and writes its own tables, cannot open another app's
  database (permission denied), is no superuser and cannot make roles; an app that shares another's
  database reads and writes its tables with grants, without owning them;
- a second run changes nothing; an app added afterwards gets an empty database, not a copy of the old one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploystack.engine.provision import run_provision
from deploystack.engine.report import Silent
from deploystack.plan.model import AppDatabase, Tenancy
from deploystack.plan.tenancy import MIGRATED, db_password_secret
from tests.integration.conftest import LOOPBACK, Project, role_container

pytestmark = pytest.mark.docker
psycopg = pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")

# What main's entrypoint made, and what Django's migrations of two apps left in the shared database.
LEGACY = """
CREATE ROLE app WITH LOGIN SUPERUSER PASSWORD 'legacy-password';
CREATE DATABASE app OWNER app;
\\connect app
SET ROLE app;
CREATE TABLE django_migrations (id bigserial PRIMARY KEY, app text, name text);
CREATE TABLE notes_note (id bigserial PRIMARY KEY, text text NOT NULL);
CREATE TABLE pages_page (id bigserial PRIMARY KEY, title text NOT NULL);
INSERT INTO django_migrations (app, name) VALUES ('notes', '0001_initial'), ('pages', '0001_initial');
INSERT INTO notes_note (text) SELECT 'note ' || g FROM generate_series(1, 500) g;
INSERT INTO pages_page (title) SELECT 'page ' || g FROM generate_series(1, 200) g;
"""
SECRETS = {db_password_secret(app): f"pw-of-{app}-Zq8" for app in ("backend", "frontend", "bff", "late")}


def app_db(app: str, shares: str | None = None) -> AppDatabase:
    owner = (shares or app).replace("-", "_")
    return AppDatabase(app=app, role=app.replace("-", "_"), database=owner,
                       password_secret=db_password_secret(app), owner=owner)


TENANCY = Tenancy(databases=(app_db("backend"), app_db("frontend"), app_db("bff", shares="backend")),
                  legacy_user="app", legacy_database="app")


def psql(container, database: str, sql: str) -> str:  # type: ignore[no-untyped-def]
    code, out = container.exec_run(["psql", "-X", "-qtA", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql",
                                    "-U", "postgres", "-d", database, "-c", sql], user="postgres")
    assert code == 0, out.decode()
    return str(out.decode().strip())


def connect(port: int, app: str, database: str | None = None, password: str | None = None):  # type: ignore[no-untyped-def]
    role = app.replace("-", "_")
    return psycopg.connect(host=LOOPBACK, port=port, user=role, dbname=database or role, connect_timeout=5,
                           password=password or SECRETS[db_password_secret(app)], autocommit=True)


@pytest.fixture(scope="module")
def primary(project: Project) -> Iterator[tuple[object, int]]:
    config = project.output / "config" / "db"
    with role_container(project, "db-primary", 5432, timeout_s=120,
                        volumes={str(config): "/etc/deploystack"}) as (container, port):
        wrapped = container.get_wrapped_container()
        code, out = wrapped.exec_run(
            ["sh", "-c", 'printf "%s" "$LEGACY" | psql -X -q -v ON_ERROR_STOP=1 -h /run/postgresql -U postgres'],
            environment={"LEGACY": LEGACY}, user="postgres")
        assert code == 0, out.decode()
        run_provision(wrapped, TENANCY, SECRETS, Silent())
        yield wrapped, port


def test_every_row_is_in_the_apps_own_databases_owned_by_their_roles(primary: tuple[object, int]) -> None:
    container, _ = primary
    for database in ("backend", "frontend"):
        assert psql(container, database, "SELECT count(*), sum(length(text)) FROM notes_note") == "500|3892"
        assert psql(container, database, "SELECT count(*) FROM pages_page") == "200"
        assert psql(container, database, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
                    ) == database
        assert psql(container, "postgres", f"SELECT pg_get_userbyid(datdba) FROM pg_database "
                                           f"WHERE datname = '{database}'") == database
    assert psql(container, "postgres", "SELECT 'bff' NOT IN (SELECT datname FROM pg_database)") == "t"


def test_the_legacy_role_and_database_are_retired_not_dropped(primary: tuple[object, int]) -> None:
    container, port = primary
    assert psql(container, "postgres", "SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'app'") == "f|f"
    assert psql(container, "postgres", "SELECT datallowconn, pg_get_userbyid(datdba), "
                                       "shobj_description(oid, 'pg_database') FROM pg_database "
                                       "WHERE datname = 'app'") == f"f|postgres|{MIGRATED}"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=LOOPBACK, port=port, user="app", password="legacy-password", dbname="app",
                        connect_timeout=5).close()


def test_app_roles_are_no_superusers_and_make_no_roles(primary: tuple[object, int]) -> None:
    container, port = primary
    assert psql(container, "postgres", "SELECT string_agg(rolname || ':' || rolsuper || rolcreaterole "
                                       "|| rolcreatedb || rolreplication || rolbypassrls, ',' ORDER BY rolname) "
                                       "FROM pg_roles WHERE rolname IN ('backend', 'frontend', 'bff')"
                ) == "backend:falsefalsefalsefalsefalse,bff:falsefalsefalsefalsefalse," \
                     "frontend:falsefalsefalsefalsefalse"
    with connect(port, "backend") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE intruder")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY notes_note TO PROGRAM 'id'")


def test_each_app_reads_and_writes_its_own_tables(primary: tuple[object, int]) -> None:
    _, port = primary
    for app in ("backend", "frontend"):
        with connect(port, app) as conn:
            conn.execute("INSERT INTO notes_note (text) VALUES (%s)", (f"written by {app}",))
            conn.execute("CREATE TABLE IF NOT EXISTS fresh (n int)")  # a new migration's table
            assert conn.execute("SELECT count(*) FROM notes_note").fetchone() == (501,)


@pytest.mark.parametrize(("app", "database"), [("backend", "frontend"), ("frontend", "backend"),
                                               ("bff", "frontend"), ("backend", "postgres"), ("backend", "app")])
def test_an_app_cannot_open_another_apps_database(primary: tuple[object, int], app: str, database: str) -> None:
    _, port = primary
    with pytest.raises(psycopg.OperationalError) as refused:
        connect(port, app, database).close()
    assert "permission denied for database" in str(refused.value) or "not currently accepting" in str(
        refused.value), refused.value


def test_a_wrong_password_is_refused(primary: tuple[object, int]) -> None:
    _, port = primary
    with pytest.raises(psycopg.OperationalError):
        connect(port, "backend", password="not-the-password").close()


def test_an_app_that_shares_works_on_the_owners_tables_without_owning_them(primary: tuple[object, int]) -> None:
    container, port = primary
    with connect(port, "bff", "backend") as conn:
        assert conn.execute("SELECT count(*) FROM pages_page").fetchone() == (200,)
        conn.execute("INSERT INTO pages_page (title) VALUES ('from bff')")  # its sequence too
        conn.execute("CREATE TABLE IF NOT EXISTS bff_feed (n int)")  # its own table in the shared database
        conn.execute("INSERT INTO bff_feed VALUES (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE pages_page")  # not the owner
    with connect(port, "backend") as conn:
        assert conn.execute("SELECT count(*) FROM bff_feed").fetchone() == (1,)  # both ways
    assert psql(container, "backend", "SELECT tableowner FROM pg_tables WHERE tablename = 'pages_page'") == "backend"


def test_a_second_run_changes_nothing_and_a_later_app_gets_an_empty_database(primary: tuple[object, int]) -> None:
    container, port = primary
    later = Tenancy(databases=(*TENANCY.databases, app_db("late")), legacy_user="app", legacy_database="app")
    run_provision(container, later, SECRETS, Silent())
    run_provision(container, later, SECRETS, Silent())
    assert psql(container, "backend", "SELECT count(*) FROM notes_note") == "501"
    with connect(port, "late") as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    with connect(port, "backend") as conn:
        assert conn.execute("SELECT count(*) FROM notes_note").fetchone() == (501,)
