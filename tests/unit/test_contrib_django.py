"""deploystack.contrib.django: settings from the APC environment, router, middleware.

Runs where Django is installed (the APC image's packages); skipped elsewhere. No Docker:
the replicas are sqlite files, and a "dead" replica is one whose folder does not exist.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

_DB_DIR = Path(tempfile.mkdtemp(prefix="deploystack-contrib-"))
atexit.register(shutil.rmtree, _DB_DIR, ignore_errors=True)
if not settings.configured:
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB_DIR / "primary.db"},
            "replica_1": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB_DIR / "r1.db"},
            "replica_2": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB_DIR / "r2.db"},
            "dead": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": _DB_DIR / "missing" / "r3.db",
            },
        },
        ALLOWED_HOSTS=["app.example.com"],
    )
    django.setup()
if "replica_1" not in settings.DATABASES:
    pytest.skip("Django was configured by another test module", allow_module_level=True)

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import OperationalError, connections, transaction  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402

from deploystack.contrib.django import (  # noqa: E402
    MEDIA_STORAGE,
    MIDDLEWARE_FIRST,
    READ_YOUR_WRITES_MIDDLEWARE,
    ROUTER,
    media_url,
    with_health,
)
from deploystack.contrib.django import settings_from_env as settings_of_env  # noqa: E402
from deploystack.contrib.django.middleware import (  # noqa: E402
    HealthCheckMiddleware,
    ReadYourWritesMiddleware,
)
from deploystack.contrib.django.router import (  # noqa: E402
    PrimaryReplicaRouter,
    pin_to_primary,
    start_request,
    used_alias,
)

POSTGRES_ENV = {
    "DJANGO_SECRET_KEY": "s3cret",
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "example.com, backend ,",
    "DB_HOST": "db-primary",
    "DB_PORT": "5432",
    "DB_NAME": "app",
    "DB_USER": "app",
    "DB_PASSWORD": "pw",
    "DB_REPLICAS": "db-replica-1,db-replica-2",
}


KEY = "k" * 50


def settings_from_env(base: Path, environ: dict[str, str]) -> dict[str, Any]:
    """The settings of an environment that has a secret key (as every deployed container has)."""
    return settings_of_env(base, environ={"DJANGO_SECRET_KEY": KEY, **environ})


class Model:
    """The router never looks at the model: any class does."""


@pytest.fixture(autouse=True)
def _fresh_request() -> Iterator[None]:
    start_request()
    yield
    start_request()


# settings_from_env ----------------------------------------------------------------------


def test_no_environment_gives_sqlite_and_locmem(tmp_path: Path) -> None:
    result = settings_from_env(tmp_path, environ={})

    assert result["SECRET_KEY"] == KEY
    assert result["DEBUG"] is False
    assert result["DATABASES"] == {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "db.sqlite3"}}
    assert result["DATABASE_ROUTERS"] == []
    assert result["CACHES"]["default"]["BACKEND"].endswith("LocMemCache")
    assert result["STATIC_URL"] == "/static/"
    assert result["STATIC_ROOT"] == tmp_path / "staticfiles"
    assert result["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert result["USE_X_FORWARDED_HOST"] is False
    assert result["DEPLOYSTACK_HEALTH_PATH"] == "/healthz"
    assert "MIDDLEWARE" not in result
    assert result["MEDIA_URL"] == "/media/"
    assert result["MEDIA_ROOT"] == tmp_path / "media"
    assert result["STORAGES"] == {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # No broker: tasks run in the caller, so a laptop needs no Redis or RabbitMQ.
    assert result["CELERY_BROKER_URL"] == "memory://"
    assert result["CELERY_RESULT_BACKEND"] == "cache+memory://"
    assert result["CELERY_TASK_ALWAYS_EAGER"] is True
    assert result["CELERY_TASK_STORE_EAGER_RESULT"] is True


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    result = settings_from_env(tmp_path, environ={"DB_HOST": ""})

    assert result["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"


@pytest.mark.parametrize("environ", [{}, {"DJANGO_SECRET_KEY": ""}, {"DJANGO_SECRET_KEY": "  "},
                                     {"DJANGO_DEBUG": "1"}], ids=["missing", "empty", "blank", "debug"])
def test_no_secret_key_refuses_to_start(tmp_path: Path, environ: dict[str, str]) -> None:
    with pytest.raises(ImproperlyConfigured, match="^DJANGO_SECRET_KEY is empty or not set: deploystack "
                                                   r"writes one into stack/\.env"):
        settings_of_env(tmp_path, environ=environ)


@pytest.mark.parametrize("key", ["build-only-dummy", "django-insecure-deploystack-dev-key-do-not-use-in-production",
                                 "django-insecure-abc"])
def test_a_published_key_refuses_to_start(tmp_path: Path, key: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"^DJANGO_SECRET_KEY is '{key}', a published placeholder"):
        settings_of_env(tmp_path, environ={"DJANGO_SECRET_KEY": key})


def test_the_image_build_gets_a_random_key_of_its_own(tmp_path: Path) -> None:
    """collectstatic in the APC Dockerfile runs with DEPLOYSTACK_BUILD=1 and no key."""
    keys = {settings_of_env(tmp_path, environ={"DEPLOYSTACK_BUILD": "1"})["SECRET_KEY"] for _ in range(2)}
    assert len(keys) == 2 and all(len(key) > 50 for key in keys)
    dockerfile = (Path(__file__).parents[2] / "compose" / "apc" / "Dockerfile.j2").read_text()
    assert "DEPLOYSTACK_BUILD=1 python manage.py collectstatic" in dockerfile
    assert "DJANGO_SECRET_KEY" not in dockerfile  # no key of any kind is baked into the image
    entrypoint = (Path(__file__).parents[2] / "compose" / "apc" / "entrypoint").read_text()
    assert "\nunset DEPLOYSTACK_BUILD\n" in entrypoint  # a running container never has the flag


@pytest.mark.parametrize(("tls", "hsts"), [(None, 0), ("self-signed", 0), ("files", 31536000), ("acme", 31536000)])
def test_https_only_cookies_and_hsts_with_a_trusted_certificate(tmp_path: Path, tls: str | None, hsts: int) -> None:
    env = {"DJANGO_CSRF_TRUSTED_ORIGINS": "https://shop.example.org:8443"} | ({"DEPLOYSTACK_TLS": tls} if tls else {})
    result = settings_from_env(tmp_path, environ=env)
    assert result["SESSION_COOKIE_SECURE"] is True and result["CSRF_COOKIE_SECURE"] is True
    assert result["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert result["SECURE_HSTS_SECONDS"] == hsts
    assert result["CSRF_TRUSTED_ORIGINS"] == ["https://shop.example.org:8443"]


def test_postgres_primary_and_replicas(tmp_path: Path) -> None:
    result = settings_from_env(tmp_path, environ=POSTGRES_ENV)

    databases = result["DATABASES"]
    assert list(databases) == ["default", "replica_1", "replica_2"]
    primary = databases["default"]
    assert primary["ENGINE"] == "django.db.backends.postgresql"
    assert (primary["HOST"], primary["PORT"], primary["NAME"]) == ("db-primary", "5432", "app")
    assert (primary["USER"], primary["PASSWORD"]) == ("app", "pw")
    assert primary["CONN_MAX_AGE"] == 60
    assert primary["CONN_HEALTH_CHECKS"] is True
    assert databases["replica_2"]["HOST"] == "db-replica-2"
    assert databases["replica_2"]["USER"] == "app"
    assert databases["replica_2"]["TEST"] == {"MIRROR": "default"}
    assert result["DATABASE_ROUTERS"] == [ROUTER]
    assert result["SECRET_KEY"] == "s3cret"
    assert result["ALLOWED_HOSTS"] == ["example.com", "backend"]


def test_asgi_apps_connect_per_request(tmp_path: Path) -> None:
    env = {**POSTGRES_ENV, "APP_ASGI": "chat.asgi:application"}

    databases = settings_from_env(tmp_path, environ=env)["DATABASES"]

    assert [db["CONN_MAX_AGE"] for db in databases.values()] == [0, 0, 0]


def test_no_replicas_means_no_router(tmp_path: Path) -> None:
    result = settings_from_env(tmp_path, environ={**POSTGRES_ENV, "DB_REPLICAS": ""})

    assert list(result["DATABASES"]) == ["default"]
    assert result["DATABASE_ROUTERS"] == []


def test_replica_may_name_its_port(tmp_path: Path) -> None:
    env = {**POSTGRES_ENV, "DB_REPLICAS": "db-replica-1:5433"}

    replica = settings_from_env(tmp_path, environ=env)["DATABASES"]["replica_1"]

    assert (replica["HOST"], replica["PORT"]) == ("db-replica-1", "5433")


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False)])
def test_debug(tmp_path: Path, value: str, expected: bool) -> None:
    assert settings_from_env(tmp_path, environ={"DJANGO_DEBUG": value})["DEBUG"] is expected


CACHE_ENV = {"REDIS_URL": "redis://:pw@redis:6379/0", "MEMCACHED_LOCATION": "memcached:11211"}


@pytest.mark.parametrize(
    ("env", "backend", "location"),
    [
        ({"REDIS_URL": CACHE_ENV["REDIS_URL"]}, "redis.RedisCache", CACHE_ENV["REDIS_URL"]),
        ({"MEMCACHED_LOCATION": "memcached:11211"}, "PyMemcacheCache", "memcached:11211"),
        (CACHE_ENV, "redis.RedisCache", CACHE_ENV["REDIS_URL"]),
        ({**CACHE_ENV, "DJANGO_CACHE": "memcached"}, "PyMemcacheCache", "memcached:11211"),
        ({**CACHE_ENV, "DJANGO_CACHE": "redis"}, "redis.RedisCache", CACHE_ENV["REDIS_URL"]),
    ],
)
def test_cache_choice(tmp_path: Path, env: dict[str, str], backend: str, location: str) -> None:
    cache = settings_from_env(tmp_path, environ={**env, "DEPLOYSTACK_APP": "backend"})["CACHES"]

    assert cache["default"]["BACKEND"].endswith(backend)
    assert cache["default"]["LOCATION"] == location
    assert cache["default"]["KEY_PREFIX"] == "backend"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_CACHE": "redis"}, "DJANGO_CACHE=redis but REDIS_URL is not set"),
        ({"DJANGO_CACHE": "disk"}, "DJANGO_CACHE='disk': must be one of redis, memcached, locmem"),
    ],
)
def test_cache_choice_errors(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        settings_from_env(tmp_path, environ=env)
    assert str(caught.value) == message


# Celery -----------------------------------------------------------------------------------

AMQP_URL = "amqp://app:pw@rabbitmq:5672/app"
REDIS_BROKER = "redis://:pw@redis:6379/0"
REDIS_RESULTS = "redis://:pw@redis:6379/1"
RELIABLE_TASKS = {
    "CELERY_TASK_ACKS_LATE": True,
    "CELERY_TASK_REJECT_ON_WORKER_LOST": True,
    "CELERY_WORKER_PREFETCH_MULTIPLIER": 1,
    "CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS": True,
    "CELERY_TASK_TRACK_STARTED": True,
    "CELERY_RESULT_EXPIRES": 86400,
}


def _celery_settings(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key.startswith("CELERY_")}


def test_celery_with_rabbitmq_and_no_redis(tmp_path: Path) -> None:
    celery = _celery_settings(settings_from_env(tmp_path, environ={"CELERY_BROKER_URL": AMQP_URL}))

    assert celery["CELERY_BROKER_URL"] == AMQP_URL
    assert celery["CELERY_RESULT_BACKEND"] == "rpc://"
    assert RELIABLE_TASKS.items() <= celery.items()
    assert "CELERY_BROKER_TRANSPORT_OPTIONS" not in celery  # RabbitMQ redelivers on a lost connection
    assert "CELERY_TASK_ALWAYS_EAGER" not in celery


def test_celery_with_rabbitmq_and_redis_results(tmp_path: Path) -> None:
    env = {"CELERY_BROKER_URL": AMQP_URL, "CELERY_RESULT_BACKEND": REDIS_RESULTS}

    celery = _celery_settings(settings_from_env(tmp_path, environ=env))

    assert (celery["CELERY_BROKER_URL"], celery["CELERY_RESULT_BACKEND"]) == (AMQP_URL, REDIS_RESULTS)
    assert "CELERY_BROKER_TRANSPORT_OPTIONS" not in celery


def test_celery_with_a_redis_broker(tmp_path: Path) -> None:
    env = {"CELERY_BROKER_URL": REDIS_BROKER, "CELERY_RESULT_BACKEND": REDIS_RESULTS}

    celery = _celery_settings(settings_from_env(tmp_path, environ=env))

    assert (celery["CELERY_BROKER_URL"], celery["CELERY_RESULT_BACKEND"]) == (REDIS_BROKER, REDIS_RESULTS)
    assert RELIABLE_TASKS.items() <= celery.items()
    # An unacknowledged task (its worker died) goes to another worker after the visibility timeout.
    assert celery["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"visibility_timeout": 3600, "unacked_restore_throttle": 1}


def test_in_a_stack_every_redis_key_of_celery_is_under_the_apps_prefix(tmp_path: Path) -> None:
    """The app's Redis ACL user may touch `<app>:*` only: kombu's queues and bindings, and the results."""
    env = {"CELERY_BROKER_URL": REDIS_BROKER, "CELERY_RESULT_BACKEND": REDIS_RESULTS, "DEPLOYSTACK_APP": "backend"}

    celery = _celery_settings(settings_from_env(tmp_path, environ=env))

    assert celery["CELERY_BROKER_TRANSPORT_OPTIONS"]["global_keyprefix"] == "backend:"
    assert celery["CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"] == {"global_keyprefix": "backend:"}
    amqp = _celery_settings(settings_from_env(tmp_path, environ={**env, "CELERY_BROKER_URL": AMQP_URL}))
    assert "CELERY_BROKER_TRANSPORT_OPTIONS" not in amqp  # RabbitMQ: the app's own vhost instead
    assert amqp["CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"] == {"global_keyprefix": "backend:"}
    rpc = _celery_settings(settings_from_env(tmp_path, environ={"CELERY_BROKER_URL": AMQP_URL, "DEPLOYSTACK_APP": "b"}))
    assert "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS" not in rpc


def test_celery_visibility_timeout_from_the_environment(tmp_path: Path) -> None:
    env = {"CELERY_BROKER_URL": REDIS_BROKER, "CELERY_VISIBILITY_TIMEOUT": "30"}

    options = settings_from_env(tmp_path, environ=env)["CELERY_BROKER_TRANSPORT_OPTIONS"]

    assert options["visibility_timeout"] == 30


@pytest.mark.parametrize("value", ["0", "-5", "1h"])
def test_celery_visibility_timeout_must_be_seconds(tmp_path: Path, value: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    env = {"CELERY_BROKER_URL": REDIS_BROKER, "CELERY_VISIBILITY_TIMEOUT": value}
    with pytest.raises(ImproperlyConfigured) as caught:
        settings_from_env(tmp_path, environ=env)
    assert str(caught.value) == f"CELERY_VISIBILITY_TIMEOUT={value!r}: must be a positive number of seconds"


@pytest.mark.parametrize("env", [{}, {"CELERY_BROKER_URL": AMQP_URL}, {"CELERY_BROKER_URL": REDIS_BROKER}])
def test_celery_settings_are_celery_settings(tmp_path: Path, env: dict[str, str]) -> None:
    """Every CELERY_* name is one that config_from_object(namespace="CELERY") knows."""
    defaults = pytest.importorskip("celery.app.defaults")

    names = {key.removeprefix("CELERY_").lower() for key in _celery_settings(settings_from_env(tmp_path, environ=env))}

    assert names <= set(defaults.DEFAULTS)


# media storage ----------------------------------------------------------------------------

S3_ENV = {
    "S3_ENDPOINT_URL": "http://media:8333",
    "S3_ACCESS_KEY": "access",
    "S3_SECRET_KEY": "secret",
    "S3_BUCKET": "media",
    "MEDIA_URL": "/media/",
}


def test_an_apps_uploads_go_under_its_prefix(tmp_path: Path) -> None:
    result = settings_from_env(tmp_path, environ=S3_ENV | {"S3_LOCATION": "backend"})
    assert result["STORAGES"]["default"]["OPTIONS"]["location"] == "backend"


def test_storages_with_s3(tmp_path: Path) -> None:
    result = settings_from_env(tmp_path, environ=S3_ENV)

    assert result["STORAGES"]["default"] == {
        "BACKEND": MEDIA_STORAGE,
        "OPTIONS": {
            "endpoint_url": "http://media:8333",
            "access_key": "access",
            "secret_key": "secret",
            "bucket_name": "media",
            "location": "",
            "addressing_style": "path",
            "region_name": "us-east-1",
            "signature_version": "s3v4",
            "default_acl": None,
            "querystring_auth": False,
            "media_url": "/media/",
            "file_overwrite": False,
        },
    }
    # Static files stay in the image: its nginx serves them.
    assert result["STORAGES"]["staticfiles"] == {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    assert result["MEDIA_URL"] == "/media/"
    assert MEDIA_STORAGE == "deploystack.contrib.django.storage.MediaStorage"


def test_media_url_gets_its_trailing_slash(tmp_path: Path) -> None:
    result = settings_from_env(tmp_path, environ={**S3_ENV, "MEDIA_URL": "/files"})

    assert result["MEDIA_URL"] == "/files/"
    assert result["STORAGES"]["default"]["OPTIONS"]["media_url"] == "/files/"


def test_s3_without_its_keys_is_an_error(tmp_path: Path) -> None:
    from django.core.exceptions import ImproperlyConfigured

    env = {**S3_ENV, "S3_SECRET_KEY": "", "S3_BUCKET": ""}
    with pytest.raises(ImproperlyConfigured) as caught:
        settings_from_env(tmp_path, environ=env)
    assert str(caught.value) == "S3_ENDPOINT_URL is set but S3_SECRET_KEY, S3_BUCKET is not"


@pytest.mark.parametrize(
    ("base", "key", "url"),
    [
        ("/media/", "uploads/1f0c.png", "/media/uploads/1f0c.png"),
        ("/media", "/uploads/a b/é.txt", "/media/uploads/a%20b/%C3%A9.txt"),
        ("https://cdn.example.com/m/", "x.bin", "https://cdn.example.com/m/x.bin"),
    ],
)
def test_media_url_is_the_base_and_the_quoted_key(base: str, key: str, url: str) -> None:
    assert media_url(base, key) == url


def test_media_storage_urls_need_no_signature(tmp_path: Path) -> None:
    pytest.importorskip("storages")
    pytest.importorskip("boto3")
    from django.utils.module_loading import import_string

    options = settings_from_env(tmp_path, environ=S3_ENV)["STORAGES"]["default"]["OPTIONS"]
    storage_class = import_string(MEDIA_STORAGE)
    storage = storage_class(**options)  # boto3 connects lazily: nothing is called here

    assert storage.url("uploads/1f0c.png") == "/media/uploads/1f0c.png"
    assert storage.url("uploads/a b.txt") == "/media/uploads/a%20b.txt"
    assert storage_class(**{**options, "location": "app"}).url("x.png") == "/media/app/x.png"
    assert storage.querystring_auth is False and storage.default_acl is None


def test_importing_the_helper_needs_only_django() -> None:
    """settings.py imports it before anything else: no Celery, django-storages or boto3."""
    code = (
        "import sys, deploystack.contrib.django\n"
        "loaded = sorted({'celery', 'kombu', 'storages', 'boto3', 'botocore'} & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_with_health_puts_the_health_check_first_once() -> None:
    middleware = ["django.middleware.security.SecurityMiddleware", MIDDLEWARE_FIRST]

    assert with_health(middleware) == [MIDDLEWARE_FIRST, middleware[0]]
    assert READ_YOUR_WRITES_MIDDLEWARE.endswith("middleware.ReadYourWritesMiddleware")


# router ---------------------------------------------------------------------------------


def test_router_finds_replica_aliases_in_settings() -> None:
    assert PrimaryReplicaRouter().replicas == ["replica_1", "replica_2"]


def test_reads_round_robin_over_replicas() -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1", "replica_2"])

    reads = [router.db_for_read(Model) for _ in range(4)]

    assert reads == ["replica_1", "replica_2", "replica_1", "replica_2"]
    assert used_alias.get() == "replica_2"


def test_writes_go_to_primary_and_later_reads_follow() -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1"])

    assert router.db_for_write(Model) == "default"
    assert router.db_for_read(Model) == "default"
    assert used_alias.get() == "default"
    start_request()  # what ReadYourWritesMiddleware does for the next request
    assert router.db_for_read(Model) == "replica_1"


def test_read_your_writes_middleware_resets_the_flag() -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1"])
    router.db_for_write(Model)
    seen: list[str] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(router.db_for_read(Model))
        return HttpResponse()

    ReadYourWritesMiddleware(view)(RequestFactory().get("/"))

    assert seen == ["replica_1"]


def test_reads_inside_atomic_on_primary_go_to_primary() -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1"])

    with transaction.atomic(using="default"):
        assert router.db_for_read(Model) == "default"
    assert router.db_for_read(Model) == "replica_1"


def test_pin_to_primary() -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1"])

    with pin_to_primary():
        assert router.db_for_read(Model) == "default"
    assert router.db_for_read(Model) == "replica_1"


def test_dead_replica_is_skipped() -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1", "dead", "replica_2"])

    reads = {router.db_for_read(Model) for _ in range(6)}

    assert reads == {"replica_1", "replica_2"}


def test_no_live_replica_reads_from_primary() -> None:
    router = PrimaryReplicaRouter(replicas=["dead"])

    assert router.db_for_read(Model) == "default"


def test_a_replica_that_fails_its_check_is_left_alone_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1"], ttl=60)

    def refuse() -> None:
        raise OperationalError("connection refused")

    connections["replica_1"].close()
    monkeypatch.setattr(connections["replica_1"], "ensure_connection", refuse)
    assert router.db_for_read(Model) == "default"
    monkeypatch.undo()  # the replica is back...
    assert router.db_for_read(Model) == "default"  # ...but not tried again before the TTL
    router.ttl = 0
    assert router.db_for_read(Model) == "replica_1"


def test_a_replica_that_stops_is_skipped_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1", "replica_2"])
    assert router.db_for_read(Model) == "replica_1"

    def refuse() -> None:
        raise OperationalError("connection refused")

    connections["replica_2"].close()
    monkeypatch.setattr(connections["replica_2"], "ensure_connection", refuse)

    assert [router.db_for_read(Model) for _ in range(3)] == ["replica_1"] * 3


def test_migrations_only_on_primary_and_relations_allowed() -> None:
    router = PrimaryReplicaRouter(replicas=["replica_1"])

    assert router.allow_migrate("default", "notes") is True
    assert router.allow_migrate("replica_1", "notes") is False
    assert router.allow_relation(object(), object()) is True


# health check ---------------------------------------------------------------------------


def _never(request: HttpRequest) -> HttpResponse:
    raise AssertionError("the health check must answer by itself")


def test_health_answers_with_any_host() -> None:
    request = RequestFactory().get("/healthz", HTTP_HOST="myproj-backend-1:8000")

    response = HealthCheckMiddleware(_never)(request)

    assert response.status_code == 200
    assert response.content == b"ok"
    assert response["Content-Type"] == "text/plain"


def test_health_checks_the_database_on_request() -> None:
    response = HealthCheckMiddleware(_never)(RequestFactory().get("/healthz", {"db": "1"}))

    assert response.status_code == 200


def test_health_is_503_when_the_database_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["default"], "cursor", broken)

    response = HealthCheckMiddleware(_never)(RequestFactory().get("/healthz", {"db": "1"}))

    assert response.status_code == 503


def test_other_paths_pass_through() -> None:
    response = HealthCheckMiddleware(lambda request: HttpResponse("app"))(RequestFactory().get("/healthzz"))

    assert response.content == b"app"


def test_db_target_session_attrs_reaches_libpq_on_the_default_connection_only(tmp_path: Path) -> None:
    """dbc.ha: patroni sets it: a node that stepped down from leading is refused, never written to."""
    databases = settings_from_env(tmp_path, {"DB_HOST": "db-router", "DB_REPLICAS": "db-router:5433",
                                             "DB_TARGET_SESSION_ATTRS": "read-write"})["DATABASES"]
    assert databases["default"]["OPTIONS"] == {"connect_timeout": 5, "target_session_attrs": "read-write"}
    assert databases["replica_1"]["OPTIONS"] == {"connect_timeout": 2}
    assert (databases["replica_1"]["HOST"], databases["replica_1"]["PORT"]) == ("db-router", "5433")
    without = settings_from_env(tmp_path, {"DB_HOST": "db-primary"})["DATABASES"]
    assert without["default"]["OPTIONS"] == {"connect_timeout": 5}
