"""One identity per app: roles, databases and secret names from the spec; the sharing rules the loader
enforces (exit 2 with the field and line); the provisioning script's shape. The script itself runs
against a real PostgreSQL in tests/integration/test_tenancy_db.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploystack.errors import SpecError
from deploystack.plan.project import build_plan
from deploystack.plan.tenancy import plan_tenancy, provision_sql
from deploystack.spec import load_stack
from tests.conftest import BLUEPRINTS, write_spec

TWO_APPS = """\
project: shop
apc:
  apps:
    backend:
      source: apps/backend
      wsgi: backend.wsgi:application
    shop-front:
      source: apps/shop-front
      wsgi: shop.wsgi:application
"""
APPS = ("backend", "shop-front")


def problems_of(folder: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_stack(write_spec(folder, text, APPS))
    return [str(p) for p in caught.value.problems]


def test_each_app_has_its_own_role_database_password_and_secret_key() -> None:
    stack = load_stack(BLUEPRINTS / "default" / "deploystack.yaml")
    plan = build_plan(stack)
    assert plan.tenancy is not None
    assert [(d.app, d.role, d.database, d.owner, d.password_secret) for d in plan.tenancy.databases] == [
        ("backend", "backend", "backend", "backend", "DB_PASSWORD_BACKEND"),
        ("frontend", "frontend", "frontend", "frontend", "DB_PASSWORD_FRONTEND"),
        ("bff", "bff", "bff", "bff", "DB_PASSWORD_BFF"),
    ]
    envs = {app: dict(plan.service(app).environment) for app in ("backend", "frontend", "bff")}
    assert len({env["DJANGO_SECRET_KEY"] for env in envs.values()}) == 3
    assert len({env["DB_PASSWORD"] for env in envs.values()}) == 3
    assert {"DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"}.isdisjoint(plan.secrets)
    # The database services know nothing of the apps: adding one never recreates them.
    for service in ("db-primary", "db-replica-1"):
        assert not any("PASSWORD" in key and key != "REPLICATION_PASSWORD"
                       for key, _ in plan.service(service).environment)


def test_an_app_that_shares_uses_the_owners_database_with_its_own_role(spec_dir: Path) -> None:
    text = TWO_APPS + "      database: {shares: backend}\n"
    stack = load_stack(write_spec(spec_dir, text, APPS))
    front = [d for d in plan_tenancy(stack).databases if d.app == "shop-front"][0]
    assert (front.role, front.database, front.owner) == ("shop_front", "backend", "backend")
    env = dict(build_plan(stack).service("shop-front").environment)
    assert (env["DB_NAME"], env["DB_USER"], env["DB_PASSWORD"]) == ("backend", "shop_front",
                                                                   "${DB_PASSWORD_SHOP_FRONT}")
    sql = provision_sql(plan_tenancy(stack))
    assert 'GRANT CONNECT, TEMPORARY ON DATABASE "backend" TO "shop_front";' in sql
    assert 'ALTER DEFAULT PRIVILEGES FOR ROLE "backend" IN SCHEMA public' in sql
    assert 'CREATE DATABASE "shop_front"' not in sql


@pytest.mark.parametrize(("extra", "expected"), [
    ("      database: {shares: shop-front}\n",
     "apc.apps.shop-front.database.shares (line 10): an app cannot share its own database; leave shares out"),
    ("      database: {shares: backnd}\n",
     "apc.apps.shop-front.database.shares (line 10): no app 'backnd' in apc.apps (did you mean 'backend'?)"),
    ("      database: {shares: 3}\n",
     "apc.apps.shop-front.database.shares (line 10): must be a string (got 3)"),
])
def test_bad_shares(spec_dir: Path, extra: str, expected: str) -> None:
    assert problems_of(spec_dir, TWO_APPS + extra) == [expected]


def test_a_chain_of_shares_is_refused(spec_dir: Path) -> None:
    text = TWO_APPS.replace("      wsgi: backend.wsgi:application\n",
                            "      wsgi: backend.wsgi:application\n      database: {shares: shop-front}\n")
    text += "      database: {shares: backend}\n"
    assert problems_of(spec_dir, text) == [
        "apc.apps.backend.database.shares (line 7): app 'shop-front' itself shares 'backend''s database: "
        "name that app instead",
        "apc.apps.shop-front.database.shares (line 11): app 'backend' itself shares 'shop-front''s database: "
        "name that app instead",
    ]


def test_an_app_named_like_the_legacy_role_or_a_system_role_is_refused(spec_dir: Path) -> None:
    text = TWO_APPS + "dbc: {user: backend}\n"
    assert problems_of(spec_dir, text) == [
        "apc.apps.backend (line 4): its database role and database would be 'backend', which dbc.user or "
        "dbc.database names (the shared layout that `up` migrates from): rename the app, or set those"]


def test_a_bad_shares_is_exit_2_and_writes_nothing(spec_dir: Path) -> None:
    spec = write_spec(spec_dir, TWO_APPS + "      database: {shares: nobody}\n", APPS)
    result = subprocess.run([sys.executable, "-m", "deploystack", "generate", "-f", str(spec)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "apc.apps.shop-front.database.shares (line 10): no app 'nobody' in apc.apps" in result.stderr
    assert "Traceback" not in result.stderr and not (spec_dir / "stack").exists()


def test_the_script_takes_passwords_from_the_environment_and_demotes_the_legacy_role() -> None:
    stack = load_stack(BLUEPRINTS / "default" / "deploystack.yaml")
    sql = provision_sql(plan_tenancy(stack))
    assert "\\getenv pw_backend DB_PASSWORD_BACKEND" in sql
    assert ("ALTER ROLE \"backend\" WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS "
            "INHERIT PASSWORD :'pw_backend';") in sql
    assert "ALTER ROLE %I NOSUPERUSER NOCREATEROLE NOCREATEDB NOLOGIN" in sql and "rolname = 'app'" in sql
    assert 'REVOKE ALL ON DATABASE "frontend" FROM PUBLIC;' in sql


def test_each_app_has_its_own_s3_key_limited_to_its_prefix_and_buckets(spec_dir: Path) -> None:
    text = TWO_APPS + "      buckets: [front-files]\nmmc: {buckets: [media, front-files, spare]}\n"
    plan = build_plan(load_stack(write_spec(spec_dir, text, APPS)))
    env = dict(plan.service("shop-front").environment)
    assert (env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"], env["S3_LOCATION"]) == (
        "${S3_ACCESS_KEY_SHOP_FRONT}", "${S3_SECRET_KEY_SHOP_FRONT}", "shop-front")
    media = dict(plan.service("media").environment)
    assert media["S3_APP_IDENTITIES"].split(";") == [
        "app-backend S3_ACCESS_KEY_BACKEND S3_SECRET_KEY_BACKEND Read:media List:media Write:media/backend/* "
        "Tagging:media/backend/*",
        "app-shop-front S3_ACCESS_KEY_SHOP_FRONT S3_SECRET_KEY_SHOP_FRONT Read:media List:media "
        "Write:media/shop-front/* Tagging:media/shop-front/* Read:front-files List:front-files "
        "Write:front-files Tagging:front-files",
    ]
    assert media["S3_ACCESS_KEY_BACKEND"] == "${S3_ACCESS_KEY_BACKEND}"
    assert {"S3_ACCESS_KEY_BACKEND", "S3_SECRET_KEY_SHOP_FRONT", "S3_ACCESS_KEY"} <= set(plan.secrets)


@pytest.mark.parametrize(("extra", "expected"), [
    ("      buckets: [media]\n", "apc.apps.shop-front.buckets[0] (line 10): 'media' is the media bucket, which "
                                 "every app has already (under <app>/)"),
    ("      buckets: [nope]\n", "apc.apps.shop-front.buckets[0] (line 10): no bucket 'nope' in mmc.buckets (media)"),
])
def test_bad_buckets(spec_dir: Path, extra: str, expected: str) -> None:
    assert problems_of(spec_dir, TWO_APPS + extra) == [expected]


def test_each_app_has_its_own_rabbitmq_user_and_vhost() -> None:
    plan = build_plan(load_stack(BLUEPRINTS / "default" / "deploystack.yaml"))
    env = dict(plan.service("backend").environment)
    assert env["CELERY_BROKER_URL"] == "amqp://backend:${RABBITMQ_PASSWORD_BACKEND}@rabbitmq:5672/backend"
    broker = dict(plan.service("rabbitmq").environment)
    assert broker["RABBITMQ_APP_USERS"].split(";") == [
        "backend backend RABBITMQ_PASSWORD_BACKEND", "frontend frontend RABBITMQ_PASSWORD_FRONTEND",
        "bff bff RABBITMQ_PASSWORD_BFF"]
    assert broker["RABBITMQ_PASSWORD_BFF"] == "${RABBITMQ_PASSWORD_BFF}"


def test_an_app_named_like_the_rabbitmq_administrator_is_refused(spec_dir: Path) -> None:
    text = TWO_APPS + "acc: {rabbitmq: {user: admin, vhost: shop-front}}\n"
    assert problems_of(spec_dir, text) == [
        "apc.apps.shop-front (line 7): its RabbitMQ user and vhost would be 'shop-front', which "
        "acc.rabbitmq.user or vhost names: rename the app, or set those"]
