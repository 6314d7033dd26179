"""Clients of the ACC/MMC benchmark, run inside a stack's containers (and, for one of them, on the host).

The benchmark sends this file's source as `python3 -c` into a container, with one JSON argument; the
container's Python runs one mode and prints one JSON object. Only the standard library is imported at
the top; the `celery` and `s3_direct` modes import what the backend image has (Django and the demo app,
boto3). Every loop is bounded by a count and by a clock.

    cache      GET /api/cached/<key>/ on one kept-alive connection: one MISS, then timed HITs
               -> {"latencies": [s], "errors": {kind: n}, "first": "MISS"}
    celery     services.tasks.add.delay(i, i).get() one after the other, in the worker's container
               -> {"latencies": [s], "errors": {kind: n}}
    s3_direct  boto3 put_object then get_object of N objects of `size` bytes, keys from the environment
               -> {"put_s": [s], "get_s": [s], "digests": [sha256], "errors": {kind: n}}
    app_put    POST /api/media/ of the same N objects to one replica
               -> {"put_s": [s], "urls": [url], "digests": [sha256], "errors": {kind: n}}
    https_get  GET of each of `paths` on one kept-alive HTTPS connection (the host, through the LBC)
               -> {"get_s": [s], "digests": [sha256], "errors": {kind: n}}

The objects are the same bytes on both S3 paths: object i is `random.Random(seed * 1000 + i).randbytes(size)`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import ssl
import sys
import time
from collections import Counter
from typing import Any

TIMEOUT_S = 30.0


def body(seed: int, number: int, size: int) -> bytes:
    return random.Random(seed * 1000 + number).randbytes(size)


def connect(args: dict[str, Any]) -> http.client.HTTPConnection:
    if args.get("scheme") == "https":
        context = ssl.create_default_context()
        context.check_hostname = False  # the stacks' certificates are self-signed
        context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(args["host"], args["port"], timeout=TIMEOUT_S, context=context)
    return http.client.HTTPConnection(args["host"], args["port"], timeout=TIMEOUT_S)


def cache(args: dict[str, Any]) -> dict[str, Any]:
    """One MISS that fills Django's cache, `warmup` untimed HITs, then `count` timed HITs."""
    path = f"/api/cached/{args['key']}/"
    headers = {"Host": args["host_header"]}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    states: list[str] = []
    deadline = time.monotonic() + float(args["max_seconds"])
    connection = connect(args)
    for number in range(1 + int(args["warmup"]) + int(args["count"])):
        if time.monotonic() > deadline:
            errors["stopped by the clock"] += 1
            break
        began = time.perf_counter()
        try:
            connection.request("GET", path, headers=headers)
            reply = connection.getresponse()
            reply.read()
            state = reply.getheader("X-Cache") or "-"
            error = None if reply.status == 200 else f"HTTP {reply.status}"
        except (OSError, http.client.HTTPException) as exc:
            error, state = type(exc).__name__, "-"
            connection.close()
            connection = connect(args)
        elapsed = time.perf_counter() - began
        if number == 0:
            states.append(state)
            continue
        if error is None and state != "HIT":
            error = f"X-Cache {state}"
        if number <= int(args["warmup"]):
            continue
        if error is None:
            latencies.append(elapsed)
        else:
            errors[error] += 1
    connection.close()
    return {"latencies": latencies, "errors": dict(errors), "first": states[0] if states else "-"}


def celery(args: dict[str, Any]) -> dict[str, Any]:
    """Round trips of the demo's `add` task: sent to the broker, run by a worker, result read back."""
    import django

    django.setup()
    from services.tasks import add  # the demo backend's tasks (DJANGO_SETTINGS_MODULE is set)

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + float(args["max_seconds"])
    for number in range(int(args["warmup"]) + int(args["count"])):
        if time.monotonic() > deadline:
            errors["stopped by the clock"] += 1
            break
        began = time.perf_counter()
        try:
            result = add.delay(number, number).get(timeout=float(args["task_timeout"]))
            error = None if result == 2 * number else f"wrong result {result!r}"
        except Exception as exc:  # any failure of one round trip is counted, not fatal
            error = type(exc).__name__
        elapsed = time.perf_counter() - began
        if number < int(args["warmup"]):
            continue
        if error is None:
            latencies.append(elapsed)
        else:
            errors[error] += 1
    return {"latencies": latencies, "errors": dict(errors)}


def s3_direct(args: dict[str, Any]) -> dict[str, Any]:
    """put_object of every object, then get_object of every object, with the app's own S3 settings."""
    import boto3
    from botocore.config import Config

    env = os.environ  # the replica's S3_* variables, passed to this exec
    client = boto3.client(
        "s3", endpoint_url=env["S3_ENDPOINT_URL"], aws_access_key_id=env["S3_ACCESS_KEY"],
        aws_secret_access_key=env["S3_SECRET_KEY"], region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"max_attempts": 1}),
    )
    bucket, prefix = env["S3_BUCKET"], args["prefix"]
    count, size, seed = int(args["count"]), int(args["size"]), int(args["seed"])
    objects = [body(seed, number, size) for number in range(count)]  # made before the clock runs
    put_s: list[float] = []
    get_s: list[float] = []
    digests: list[str] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + float(args["max_seconds"])
    client.list_objects_v2(Bucket=bucket, MaxKeys=1)  # the connection is made and signed once, untimed
    for number, data in enumerate(objects):
        if time.monotonic() > deadline:
            errors["stopped by the clock"] += 1
            break
        began = time.perf_counter()
        try:
            client.put_object(Bucket=bucket, Key=f"{prefix}{number}", Body=data,
                              ContentType="application/octet-stream")
            put_s.append(time.perf_counter() - began)
        except Exception as exc:
            errors[f"put {type(exc).__name__}"] += 1
    for number in range(len(put_s)):
        if time.monotonic() > deadline:
            errors["stopped by the clock"] += 1
            break
        began = time.perf_counter()
        try:
            data = client.get_object(Bucket=bucket, Key=f"{prefix}{number}")["Body"].read()
            get_s.append(time.perf_counter() - began)
            digests.append(hashlib.sha256(data).hexdigest())
            if data != objects[number]:
                errors["get: other bytes"] += 1
        except Exception as exc:
            errors[f"get {type(exc).__name__}"] += 1
    return {"put_s": put_s, "get_s": get_s, "digests": digests, "errors": dict(errors)}


def app_put(args: dict[str, Any]) -> dict[str, Any]:
    """POST /api/media/ of every object to one replica, on one kept-alive connection."""
    count, size, seed = int(args["count"]), int(args["size"]), int(args["seed"])
    objects = [body(seed, number, size) for number in range(count)]
    headers = {"Host": args["host_header"], "Content-Type": "application/octet-stream"}
    put_s: list[float] = []
    urls: list[str] = []
    digests: list[str] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + float(args["max_seconds"])
    connection = connect(args)
    for data in objects:
        if time.monotonic() > deadline:
            errors["stopped by the clock"] += 1
            break
        began = time.perf_counter()
        try:
            connection.request("POST", "/api/media/", body=data, headers=headers)
            reply = connection.getresponse()
            answer = reply.read()
            elapsed = time.perf_counter() - began
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] += 1
            connection.close()
            connection = connect(args)
            continue
        if reply.status != 201:
            errors[f"HTTP {reply.status}"] += 1
            continue
        put_s.append(elapsed)
        urls.append(json.loads(answer)["url"])
        digests.append(hashlib.sha256(data).hexdigest())
    connection.close()
    return {"put_s": put_s, "urls": urls, "digests": digests, "errors": dict(errors)}


def https_get(args: dict[str, Any]) -> dict[str, Any]:
    """GET of every path, one after the other on one kept-alive connection."""
    headers = {"Host": args["host_header"]}
    get_s: list[float] = []
    digests: list[str] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + float(args["max_seconds"])
    connection = connect(args)
    for path in args["paths"]:
        if time.monotonic() > deadline:
            errors["stopped by the clock"] += 1
            break
        began = time.perf_counter()
        try:
            connection.request("GET", path, headers=headers)
            reply = connection.getresponse()
            data = reply.read()
            elapsed = time.perf_counter() - began
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] += 1
            connection.close()
            connection = connect(args)
            continue
        if reply.status != 200:
            errors[f"HTTP {reply.status}"] += 1
            continue
        get_s.append(elapsed)
        digests.append(hashlib.sha256(data).hexdigest())
    connection.close()
    return {"get_s": get_s, "digests": digests, "errors": dict(errors)}


MODES = {"cache": cache, "celery": celery, "s3_direct": s3_direct, "app_put": app_put, "https_get": https_get}

if __name__ == "__main__":
    arguments = json.loads(sys.argv[1])
    print(json.dumps(MODES[arguments["mode"]](arguments)))
