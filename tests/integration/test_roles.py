"""Each backing role's image on its own, checked from the host over its real protocol, as a user would:
redis, memcached, rabbitmq, media (SeaweedFS S3) and db (PostgreSQL primary). See conftest.py."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from tests.integration.conftest import LOOPBACK, Project, role_container

pytestmark = pytest.mark.docker


# --- redis ---------------------------------------------------------------------------------------------

class RedisError(Exception):
    pass


class Resp:
    """Just enough RESP2 to send commands and read the replies (no redis client in the test extras)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=5)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def call(self, *args: str) -> object:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> object:
        line = self.reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise AssertionError(f"unexpected reply {line!r}")


@pytest.fixture(scope="module")
def redis(project: Project) -> Iterator[int]:
    with role_container(project, "redis", 6379, timeout_s=60) as (_, port):
        yield port


@pytest.fixture
def resp(redis: int) -> Iterator[Resp]:
    conn = Resp(redis)
    try:
        yield conn
    finally:
        conn.close()


def test_redis_auth_with_the_generated_password_then_set_get(project: Project, resp: Resp) -> None:
    password = project.environment("redis")["REDIS_PASSWORD"]
    assert resp.call("AUTH", password) == "OK"
    key = f"it:{uuid.uuid4().hex}"
    assert resp.call("SET", key, "héllo", "EX", "60") == "OK"
    assert resp.call("GET", key) == "héllo"
    assert resp.call("DEL", key) == 1
    # REDIS_MAXMEMORY (the default blueprint's 256mb) and the policy that spares Celery's queues (INFO:
    # CONFIG is denied to this password).
    memory = str(resp.call("INFO", "memory"))
    assert f"maxmemory:{256 * 1024 * 1024}\r\n" in memory and "maxmemory_policy:volatile-lru\r\n" in memory


def test_redis_denies_dangerous_commands_but_not_the_caches_flushdb(project: Project, resp: Resp) -> None:
    """The default user's password (no app's: each has its own user, test_tenancy_redis.py) cannot rewrite
    the configuration (CONFIG SET dir + SAVE writes files), empty every database at once (FLUSHALL:
    Celery's queue too) or stop the server; a FLUSHDB of one database stays allowed to it."""
    assert resp.call("AUTH", project.environment("redis")["REDIS_PASSWORD"]) == "OK"
    for command in (("CONFIG", "SET", "dir", "/tmp"), ("FLUSHALL",), ("SHUTDOWN", "NOSAVE"),
                    ("REPLICAOF", "127.0.0.1", "1"), ("ACL", "SETUSER", "x", "on"), ("MONITOR",)):
        with pytest.raises(RedisError, match="^NOPERM"):
            resp.call(*command)
    # Denied by the ACL too, but Redis 7 refuses these to every remote client before the ACL is asked.
    for command in (("DEBUG", "SLEEP", "0"), ("MODULE", "LOAD", "/tmp/x.so")):
        with pytest.raises(RedisError, match="^(NOPERM|ERR (DEBUG|MODULE) command not allowed)"):
            resp.call(*command)
    assert resp.call("SELECT", "3") == "OK" and resp.call("SET", "k", "v") == "OK"
    assert resp.call("FLUSHDB") == "OK" and resp.call("GET", "k") is None
    assert resp.call("PING") == "PONG"  # still up


def test_redis_refuses_no_password_and_a_wrong_one(resp: Resp) -> None:
    with pytest.raises(RedisError, match="^NOAUTH"):
        resp.call("GET", "anything")
    with pytest.raises(RedisError, match="^(WRONGPASS|ERR invalid password)"):
        resp.call("AUTH", "not-the-password")
    with pytest.raises(RedisError, match="^NOAUTH"):
        resp.call("SET", "k", "v")


# --- memcached -----------------------------------------------------------------------------------------

def memcached_exchange(port: int, request: bytes, until: bytes) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while not data.endswith(until):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        return data


def test_memcached_set_get_over_tcp(project: Project) -> None:
    with role_container(project, "memcached", 11211, timeout_s=60) as (_, port):
        key, value = f"it-{uuid.uuid4().hex}", b"hello memcached"
        stored = memcached_exchange(port, b"set %s 0 60 %d\r\n%s\r\n" % (key.encode(), len(value), value), b"\r\n")
        assert stored == b"STORED\r\n"
        got = memcached_exchange(port, b"get %s\r\n" % key.encode(), b"END\r\n")
        assert got == b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key.encode(), len(value), value)
        assert memcached_exchange(port, b"get it-missing\r\n", b"END\r\n") == b"END\r\n"
        # MEMCACHED_MEMORY_MB reached memcached's -m.
        stats = memcached_exchange(port, b"stats settings\r\n", b"END\r\n").decode()
        megabytes = int(project.environment("memcached")["MEMCACHED_MEMORY_MB"])
        assert f"STAT maxbytes {megabytes * 1024 * 1024}\r\n" in stats


# --- rabbitmq ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rabbitmq(project: Project) -> Iterator[int]:
    with role_container(project, "rabbitmq", 5672, timeout_s=180) as (_, port):
        yield port


def amqp_url(user: str, password: str, port: int, vhost: str) -> str:
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{LOOPBACK}:{port}/{quote(vhost, safe='')}"


def test_rabbitmq_generated_user_on_its_vhost(project: Project, rabbitmq: int) -> None:
    from kombu import Connection

    env = project.environment("rabbitmq")
    url = amqp_url(env["RABBITMQ_USER"], env["RABBITMQ_PASSWORD"], rabbitmq, env["RABBITMQ_VHOST"])
    with Connection(url, connect_timeout=10) as conn:
        conn.connect()
        queue = conn.SimpleQueue(f"it-{uuid.uuid4().hex}", queue_opts={"auto_delete": True})
        try:
            queue.put({"hello": "rabbit"})
            message = queue.get(timeout=10)
            assert message.payload == {"hello": "rabbit"}
            message.ack()
        finally:
            queue.close()


@pytest.mark.parametrize("who", ["guest", "wrong password", "other vhost"])
def test_rabbitmq_refuses(project: Project, rabbitmq: int, who: str) -> None:
    import amqp  # py-amqp: kombu's transport, a dependency of celery
    from kombu import Connection

    env = project.environment("rabbitmq")
    user, password, vhost = env["RABBITMQ_USER"], env["RABBITMQ_PASSWORD"], env["RABBITMQ_VHOST"]
    if who == "guest":
        user, password = "guest", "guest"
    elif who == "wrong password":
        password = "not-the-password"
    else:
        vhost = "/"
    with Connection(amqp_url(user, password, rabbitmq, vhost), connect_timeout=10) as conn, \
            pytest.raises((amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed)):
        conn.connect()


# --- media (SeaweedFS S3) ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def media(project: Project) -> Iterator[int]:
    with role_container(project, "media", 8333, timeout_s=120) as (_, port):
        yield port


def s3_client(port: int, access_key: str, secret_key: str):  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://{LOOPBACK}:{port}", region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=10,
                                      retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def s3(project: Project, media: int):  # type: ignore[no-untyped-def]
    env = project.environment("media")
    client = s3_client(media, env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"])
    # The entrypoint creates S3_BUCKETS in the background once S3 answers: the health check may pass first.
    wanted = set(env["S3_BUCKETS"].split(","))
    deadline = time.monotonic() + 60
    while not wanted <= {b["Name"] for b in client.list_buckets()["Buckets"]}:
        assert time.monotonic() < deadline, f"buckets {sorted(wanted)} not created within 60 s"
        time.sleep(0.5)
    return client


def test_media_put_get_with_the_keys_and_unsigned_get_of_a_public_bucket(project: Project, media: int,
                                                                        s3) -> None:  # type: ignore[no-untyped-def]
    public = project.environment("media")["S3_PUBLIC_BUCKETS"].split(",")[0]
    key, body = f"it/{uuid.uuid4().hex}.txt", b"hello media"
    s3.put_object(Bucket=public, Key=key, Body=body, ContentType="text/plain")
    assert s3.get_object(Bucket=public, Key=key)["Body"].read() == body
    unsigned = requests.get(f"http://{LOOPBACK}:{media}/{public}/{key}", timeout=10)
    assert unsigned.status_code == 200
    assert unsigned.content == body


def test_media_refuses_unsigned_writes_and_unsigned_reads_of_other_buckets(project: Project, media: int,
                                                                          s3) -> None:  # type: ignore[no-untyped-def]
    public = project.environment("media")["S3_PUBLIC_BUCKETS"].split(",")[0]
    key = f"it/{uuid.uuid4().hex}.txt"
    put = requests.put(f"http://{LOOPBACK}:{media}/{public}/{key}", data=b"anonymous", timeout=10)
    assert put.status_code == 403, put.text
    with pytest.raises(s3.exceptions.ClientError) as missing:
        s3.head_object(Bucket=public, Key=key)
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey")

    private = f"it-private-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=private)
    s3.put_object(Bucket=private, Key="secret.txt", Body=b"secret")
    assert requests.get(f"http://{LOOPBACK}:{media}/{private}/secret.txt", timeout=10).status_code == 403


def test_media_refuses_a_wrong_secret_key(project: Project, media: int, s3) -> None:  # type: ignore[no-untyped-def]
    from botocore.exceptions import ClientError

    env = project.environment("media")
    wrong = s3_client(media, env["S3_ACCESS_KEY"], "not-the-secret-key")
    with pytest.raises(ClientError) as refused:
        wrong.list_buckets()
    assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied"), refused.value


def test_media_serves_and_takes_an_object_larger_than_its_memory_limit(project: Project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SeaweedFS reads an S3 GET's chunks ahead of its client and takes uploads in flight without bound unless
    told (-s3.readerCacheSizeMB, -s3.concurrentUploadLimitMB): a 470 MB pgBackRest repository file got weed
    killed at the container's limit mid-GET (`db restore`: 'unexpected EOF reading HTTP content'). An object
    above the limit, uploaded in 5 MiB parts as pgBackRest does, must come back whole from one GET."""
    import hashlib

    from boto3.s3.transfer import TransferConfig

    part = 5 << 20
    size = 52 * part  # 260 MiB
    with role_container(project, "media", 8333, timeout_s=120, mem_limit="192m") as (container, port):
        env = project.environment("media")
        client = s3_client(port, env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"])
        bucket = env["S3_BUCKETS"].split(",")[0]
        deadline = time.monotonic() + 60
        while bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            assert time.monotonic() < deadline, f"bucket {bucket} not created within 60 s"
            time.sleep(0.5)
        source, sent = tmp_path / "big", hashlib.sha256()
        with source.open("wb") as out:
            for _ in range(size // part):
                chunk = os.urandom(part)
                sent.update(chunk)
                out.write(chunk)
        client.upload_file(str(source), bucket, "it/big", Config=TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=2))
        source.unlink()
        received, length = hashlib.sha256(), 0
        body = client.get_object(Bucket=bucket, Key="it/big")["Body"]  # one GET, read as it arrives
        for chunk in iter(lambda: body.read(1 << 20), b""):
            received.update(chunk)
            length += len(chunk)
        state = container.get_wrapped_container()
        state.reload()
        assert not state.attrs["State"]["OOMKilled"], "weed was killed at the container's memory limit"
        assert (length, received.hexdigest()) == (size, sent.hexdigest())


# --- db (PostgreSQL primary) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def db(project: Project) -> Iterator[tuple[object, int]]:
    # The rendered postgresql.conf and pg_hba.conf, mounted as compose.yaml does (a folder, read-only).
    config = project.output / "config" / "db"
    assert (config / "pg_hba.conf").is_file() and (config / "postgresql.conf").is_file()
    with role_container(project, "db-primary", 5432, timeout_s=120,
                        volumes={str(config): "/etc/deploystack"}) as (container, port):
        yield container.get_wrapped_container(), port


def app_credentials(project: Project, db_container) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The first app's role, provisioned as `up` does once the primary is ready (engine/provision.py)."""
    from deploystack.engine.provision import run_provision
    from deploystack.engine.report import Silent

    tenancy = project.rendered.plan.tenancy
    assert tenancy is not None
    run_provision(db_container, tenancy, project.rendered.secrets, Silent())
    first = tenancy.databases[0]
    return {"user": first.role, "password": project.rendered.secrets[first.password_secret],
            "dbname": first.database}


def test_db_app_user_creates_inserts_selects(project: Project, db: tuple[object, int]) -> None:
    psycopg = pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
    container, port = db
    with psycopg.connect(host=LOOPBACK, port=port, connect_timeout=5, **app_credentials(project, container)) as conn:
        conn.execute("CREATE TABLE it_items (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO it_items (name) VALUES (%s), (%s)", ("one", "two"))
        rows = conn.execute("SELECT name FROM it_items ORDER BY id").fetchall()
        assert rows == [("one",), ("two",)]
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)


@pytest.mark.parametrize("who", ["wrong password", "postgres over TCP", "replication user on the app db"])
def test_db_refuses(project: Project, db: tuple[object, int], who: str) -> None:
    psycopg = pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
    container, port = db
    env = project.environment("db-primary")
    credentials = app_credentials(project, container)
    if who == "wrong password":
        credentials["password"] = "not-the-password"
    elif who == "postgres over TCP":
        credentials["user"] = "postgres"
    else:
        credentials |= {"user": env["REPLICATION_USER"], "password": env["REPLICATION_PASSWORD"]}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=LOOPBACK, port=port, connect_timeout=5, **credentials).close()
