"""Benchmark of ACC and MMC through the demo app (issue 5), run by `make bench`, not in CI: a table on
stdout, JSON in bench-results/acc_mmc.json.

Each part runs BENCH_RUNS times (default 3); the table gives medians over the runs and the ratio of a
peer measured in the same session, its runs interleaved with the other side's (the side that goes first
alternates from run to run):

1. cache: GET /api/cached/<key>/ HITs (after one MISS), sent to one backend replica from a probe container
   on the private network, with `acc.cache: redis` (the session's default stack) and `acc.cache:
   memcached` (a stack of just the backend and what it needs, from a derived spec; nothing else differs
   for the backend but DJANGO_CACHE). Ratio memcached/redis.
2. Celery: round trips of `services.tasks.add.delay(i, i).get()` timed in the worker's own container,
   RabbitMQ broker (the default stack) vs Redis broker (`acc.rabbitmq: false`: a stack of just the worker
   and what it needs). Results go to Redis in both. Ratio redis/rabbitmq.
3. S3: 1 MiB objects written then read with boto3 straight to the media store from the private network
   (the app's own S3 keys and settings), and the same bytes through the app: POST /api/media/ to a backend
   replica, then GET /media/... through the LBC from the host. MiB/s; ratio app path/direct.

The two peer stacks are up only during their own part, one after the other, and the default stack is up
all the while: the machine carries the same stacks while either side of a comparison is measured.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import Container

from tests.bench import acc_mmc_probe
from tests.bench.conftest import BenchStack, derive_default_spec, peer_stack, probe_in, publish
from tests.bench.test_lbc_bench import environment, medians, percentile, ratio
from tests.conftest import REPO

pytestmark = pytest.mark.docker

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
RESULTS_FILE = REPO / "bench-results" / "acc_mmc.json"
PROBE_FILE = Path(acc_mmc_probe.__file__)
APP, WORKER = "backend", "backend-worker"

CACHE_COUNT, CACHE_WARMUP, CACHE_MAX_SECONDS = 1000, 50, 120.0
CELERY_COUNT, CELERY_WARMUP, CELERY_MAX_SECONDS, TASK_TIMEOUT_S = 200, 10, 240.0, 30.0
S3_COUNT, S3_SIZE, S3_MAX_SECONDS = 30, 1024 * 1024, 180.0
MIB = 1024 * 1024

CACHE_PEERS = {"redis": "Redis (acc.cache: redis)", "memcached": "Memcached (acc.cache: memcached)"}
BROKER_PEERS = {"rabbitmq": "RabbitMQ broker (default)", "redis": "Redis broker (acc.rabbitmq: false)"}
S3_PATHS = {"direct": "direct: boto3 to the media store, private network",
            "app": "app: POST /api/media/ to a replica, GET /media/ via LBC"}


# -- results, the table and the JSON -----------------------------------------------------------------


@dataclass
class LatencyRun:
    run: int
    peer: str
    p50_ms: float
    p99_ms: float
    mean_ms: float
    count: int
    errors: dict[str, int]


@dataclass
class ThroughputRun:
    run: int
    path: str
    put_mib_s: float
    get_mib_s: float
    put_p50_ms: float
    get_p50_ms: float
    objects_put: int
    objects_got: int
    errors: dict[str, int]


@dataclass
class Results:
    projects: dict[str, str] = field(default_factory=dict)
    cache: list[LatencyRun] = field(default_factory=list)
    celery: list[LatencyRun] = field(default_factory=list)
    s3: list[ThroughputRun] = field(default_factory=list)


def latency_run(run: int, peer: str, measured: dict[str, Any]) -> LatencyRun:
    latencies: list[float] = measured["latencies"]
    return LatencyRun(
        run=run, peer=peer, p50_ms=percentile(latencies, 50) * 1000, p99_ms=percentile(latencies, 99) * 1000,
        mean_ms=statistics.fmean(latencies) * 1000 if latencies else float("nan"), count=len(latencies),
        errors=measured["errors"],
    )


def mib_per_s(seconds: list[float]) -> float:
    """Throughput of sequential transfers of S3_SIZE bytes each."""
    return len(seconds) * S3_SIZE / MIB / sum(seconds) if seconds else float("nan")


def by_peer(rows: list[Any], attribute: str, peers: dict[str, str]) -> dict[str, dict[str, float]]:
    return {peer: medians([row for row in rows if getattr(row, attribute) == peer]) for peer in peers}


def summarize(results: Results, stack: BenchStack) -> dict[str, Any]:
    cache = by_peer(results.cache, "peer", CACHE_PEERS)
    celery = by_peer(results.celery, "peer", BROKER_PEERS)
    s3 = by_peer(results.s3, "path", S3_PATHS)
    ratios: dict[str, float | None] = {}
    for stat in ("p50_ms", "p99_ms"):
        ratios[f"cache memcached/redis {stat}"] = ratio(cache["memcached"].get(stat), cache["redis"].get(stat))
        ratios[f"celery redis/rabbitmq {stat}"] = ratio(celery["redis"].get(stat), celery["rabbitmq"].get(stat))
    for stat in ("put_mib_s", "get_mib_s", "put_p50_ms", "get_p50_ms"):
        ratios[f"s3 app/direct {stat}"] = ratio(s3["app"].get(stat), s3["direct"].get(stat))
    return {
        "benchmark": "acc+mmc (issue 5)",
        "projects": {"default": stack.project, **results.projects},
        "runs_wanted": RUNS,
        "complete": len(results.cache) == RUNS * len(CACHE_PEERS) and len(results.celery) == RUNS * len(BROKER_PEERS)
        and len(results.s3) == RUNS * len(S3_PATHS),
        "settings": {
            "cache_hits": CACHE_COUNT, "cache_warmup": CACHE_WARMUP, "celery_round_trips": CELERY_COUNT,
            "celery_warmup": CELERY_WARMUP, "task_timeout_s": TASK_TIMEOUT_S, "s3_objects": S3_COUNT,
            "s3_object_bytes": S3_SIZE,
        },
        "environment": environment(stack),
        "runs": {"cache": [asdict(r) for r in results.cache], "celery": [asdict(r) for r in results.celery],
                 "s3": [asdict(r) for r in results.s3]},
        "medians": {"cache": cache, "celery": celery, "s3": s3},
        "ratios": ratios,
    }


def num(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def latency_table(title: str, peers: dict[str, str], rows: dict[str, dict[str, float]],
                  ratio_label: str, ratios: tuple[float | None, float | None]) -> list[str]:
    lines = [title, f"{'':58}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"]
    for peer, label in peers.items():
        m = rows.get(peer, {})
        lines.append(f"{label:58}{num(m.get('p50_ms'), 3):>9}{num(m.get('p99_ms'), 3):>9}"
                     f"{num(m.get('mean_ms'), 3):>9}")
    lines.append(f"{ratio_label:58}{num(ratios[0]):>9}{num(ratios[1]):>9}")
    return lines


def table(report: dict[str, Any]) -> str:
    env, m, r = report["environment"], report["medians"], report["ratios"]
    lines = [
        f"ACC/MMC benchmark, projects {', '.join(report['projects'].values())}: medians of {RUNS} run(s); "
        f"{env['cpu_count']} CPUs, {env['date']}, commit {env['commit']}{' (dirty)' if env['worktree_dirty'] else ''}",
        "",
        *latency_table(
            f"Cache: GET /api/cached/<key>/, {CACHE_COUNT} HITs after one MISS (and {CACHE_WARMUP} warm-up), one "
            f"kept-alive connection to {APP}-1:8000 from the private network",
            CACHE_PEERS, m["cache"], "memcached/redis",
            (r["cache memcached/redis p50_ms"], r["cache memcached/redis p99_ms"])),
        "",
        *latency_table(
            f"Celery: add.delay(i, i).get(), {CELERY_COUNT} sequential round trips (after {CELERY_WARMUP}) in the "
            "worker's container; results in Redis",
            BROKER_PEERS, m["celery"], "redis/rabbitmq",
            (r["celery redis/rabbitmq p50_ms"], r["celery redis/rabbitmq p99_ms"])),
        "",
        f"S3: {S3_COUNT} objects of {S3_SIZE // MIB} MiB, put all then get all, one at a time",
        f"{'':58}{'put MiB/s':>10}{'get MiB/s':>10}{'put p50 ms':>11}{'get p50 ms':>11}",
    ]
    for path, label in S3_PATHS.items():
        row = m["s3"].get(path, {})
        lines.append(f"{label:58}{num(row.get('put_mib_s'), 1):>10}{num(row.get('get_mib_s'), 1):>10}"
                     f"{num(row.get('put_p50_ms'), 1):>11}{num(row.get('get_p50_ms'), 1):>11}")
    lines.append(f"{'app/direct':58}{num(r['s3 app/direct put_mib_s']):>10}{num(r['s3 app/direct get_mib_s']):>10}"
                 f"{num(r['s3 app/direct put_p50_ms']):>11}{num(r['s3 app/direct get_p50_ms']):>11}")
    lines += [
        "  latency ratios above 1: the second peer is slower; app/direct MiB/s below 1: the app path is slower.",
        "  direct = boto3 with the replicas' S3 keys from a probe container; app = the same bytes POSTed to "
        f"{APP}-1:8000 from there, then read from the host over HTTPS.",
    ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def results(stack: BenchStack) -> Iterator[Results]:
    """Collects every run; at the end, prints the table and writes the JSON, whatever failed."""
    collected = Results()
    yield collected
    report = summarize(collected, stack)
    publish(report, table(report), RESULTS_FILE)


# -- running the probes ------------------------------------------------------------------------------


def run_inside(container: Container, args: dict[str, Any], environment: dict[str, str] | None = None) -> dict[str, Any]:
    """acc_mmc_probe.py's `args["mode"]` in `container`; the probe bounds itself in count and time."""
    code, (out, err) = container.exec_run(["python3", "-c", PROBE_FILE.read_text(), json.dumps(args)],
                                          demux=True, environment=environment)
    stdout, stderr = (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")
    assert code == 0, f"{args['mode']} probe in {container.name} failed ({code}): {stderr[-2000:]}"
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def alternating(run: int, peers: list[Any]) -> list[Any]:
    """Each peer goes first once in a while: no order bias."""
    shift = (run - 1) % len(peers)
    return peers[shift:] + peers[:shift]


def failures(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [(row.run, getattr(row, "peer", getattr(row, "path", "")), row.errors) for row in rows if row.errors]


# -- 1. cache get latency: Redis vs Memcached --------------------------------------------------------


def cache_args(stack: BenchStack, run: int) -> dict[str, Any]:
    # `backend` is in the app's ALLOWED_HOSTS (a container name is not).
    return {"mode": "cache", "host": stack.replica_name(APP, 1), "port": 8000, "host_header": APP,
            "key": f"bench-{run}-{secrets.token_hex(4)}", "count": CACHE_COUNT, "warmup": CACHE_WARMUP,
            "max_seconds": CACHE_MAX_SECONDS}


@pytest.fixture
def memcached_stack(tmp_path: Path) -> Iterator[BenchStack]:
    def memcached_cache(data: Any) -> None:
        data["acc"]["cache"] = "memcached"

    with peer_stack(derive_default_spec(tmp_path, memcached_cache), services=[APP]) as peer:
        yield peer


def test_cache_get_latency_redis_vs_memcached(stack: BenchStack, probe: Container, memcached_stack: BenchStack,
                                              results: Results) -> None:
    results.projects["cache memcached"] = memcached_stack.project
    with probe_in(memcached_stack) as memcached_probe:
        sides = [("redis", stack, probe), ("memcached", memcached_stack, memcached_probe)]
        for run in range(1, RUNS + 1):
            for peer, on, probe_container in alternating(run, sides):
                measured = run_inside(probe_container, cache_args(on, run))
                assert measured["first"] == "MISS", f"{peer}: the first GET of a new key was {measured['first']}"
                results.cache.append(latency_run(run, peer, measured))
    assert not failures(results.cache), f"failed cache GETs (run, peer, errors): {failures(results.cache)}"


# -- 2. Celery round trip: RabbitMQ vs Redis as the broker -------------------------------------------


@pytest.fixture
def redis_broker_stack(tmp_path: Path) -> Iterator[BenchStack]:
    def no_rabbitmq(data: Any) -> None:
        data["acc"]["rabbitmq"] = False

    with peer_stack(derive_default_spec(tmp_path, no_rabbitmq), services=[WORKER]) as peer:
        yield peer


def broker_scheme(worker: Container) -> str:
    env: dict[str, str] = dict(item.split("=", 1) for item in worker.attrs["Config"]["Env"])
    return env["CELERY_BROKER_URL"].split(":", 1)[0]


def test_celery_round_trip_rabbitmq_vs_redis(stack: BenchStack, redis_broker_stack: BenchStack,
                                             results: Results) -> None:
    results.projects["celery redis broker"] = redis_broker_stack.project
    workers = {"rabbitmq": stack.docker.containers.get(stack.replica_name(WORKER, 1)),
               "redis": redis_broker_stack.docker.containers.get(redis_broker_stack.replica_name(WORKER, 1))}
    assert {peer: broker_scheme(worker) for peer, worker in workers.items()} == {"rabbitmq": "amqp", "redis": "redis"}
    args = {"mode": "celery", "count": CELERY_COUNT, "warmup": CELERY_WARMUP, "max_seconds": CELERY_MAX_SECONDS,
            "task_timeout": TASK_TIMEOUT_S}
    for run in range(1, RUNS + 1):
        for peer in alternating(run, list(BROKER_PEERS)):
            results.celery.append(latency_run(run, peer, run_inside(workers[peer], args)))
    assert not failures(results.celery), f"failed round trips (run, peer, errors): {failures(results.celery)}"


# -- 3. S3 throughput: straight to the media store vs through the app --------------------------------


def s3_environment(stack: BenchStack) -> dict[str, str]:
    """The S3 endpoint, keys and bucket that the backend replicas have."""
    replica = stack.docker.containers.get(stack.replica_name(APP, 1))
    env = dict(item.split("=", 1) for item in replica.attrs["Config"]["Env"])
    return {name: env[name] for name in ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET")}


def direct_run(stack: BenchStack, probe: Container, run: int, seed: int) -> tuple[ThroughputRun, list[str]]:
    measured = run_inside(probe, {"mode": "s3_direct", "prefix": f"bench/{stack.project}/{run}/", "count": S3_COUNT,
                                  "size": S3_SIZE, "seed": seed, "max_seconds": S3_MAX_SECONDS},
                          environment=s3_environment(stack))
    put_s, get_s = measured["put_s"], measured["get_s"]
    return ThroughputRun(
        run=run, path="direct", put_mib_s=mib_per_s(put_s), get_mib_s=mib_per_s(get_s),
        put_p50_ms=percentile(put_s, 50) * 1000, get_p50_ms=percentile(get_s, 50) * 1000,
        objects_put=len(put_s), objects_got=len(get_s), errors=measured["errors"],
    ), measured["digests"]


def app_run(stack: BenchStack, probe: Container, run: int, seed: int) -> tuple[ThroughputRun, list[str]]:
    written = run_inside(probe, {"mode": "app_put", "host": stack.replica_name(APP, 1), "port": 8000,
                                 "host_header": APP, "count": S3_COUNT, "size": S3_SIZE, "seed": seed,
                                 "max_seconds": S3_MAX_SECONDS})
    https_port = int(stack.https.rsplit(":", 1)[1])
    read = acc_mmc_probe.https_get({"scheme": "https", "host": "127.0.0.1", "port": https_port,
                                    "host_header": "localhost", "paths": written["urls"],
                                    "max_seconds": S3_MAX_SECONDS})
    errors = {f"put {kind}": n for kind, n in written["errors"].items()}
    errors |= {f"get {kind}": n for kind, n in read["errors"].items()}
    if read["digests"] != written["digests"][:len(read["digests"])]:
        errors["get: other bytes"] = 1
    put_s, get_s = written["put_s"], read["get_s"]
    return ThroughputRun(
        run=run, path="app", put_mib_s=mib_per_s(put_s), get_mib_s=mib_per_s(get_s),
        put_p50_ms=percentile(put_s, 50) * 1000, get_p50_ms=percentile(get_s, 50) * 1000,
        objects_put=len(put_s), objects_got=len(get_s), errors=errors,
    ), written["digests"]


def test_s3_throughput_direct_vs_through_the_app(stack: BenchStack, probe: Container, results: Results) -> None:
    paths = {"direct": direct_run, "app": app_run}
    for run in range(1, RUNS + 1):
        seed = secrets.randbelow(1_000_000)  # one set of objects per run, the same bytes on both paths
        digests: dict[str, list[str]] = {}
        for path in alternating(run, list(paths)):
            row, digests[path] = paths[path](stack, probe, run, seed)
            results.s3.append(row)
        assert digests["direct"] == digests["app"], f"run {run}: the two paths moved different bytes"
    incomplete = [(r.run, r.path, r.objects_put, r.objects_got) for r in results.s3
                  if (r.objects_put, r.objects_got) != (S3_COUNT, S3_COUNT)]
    assert not failures(results.s3), f"failed S3 transfers (run, path, errors): {failures(results.s3)}"
    assert not incomplete, f"objects missing (run, path, put, got): {incomplete}"
