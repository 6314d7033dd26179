"""Time sequential GETs on one kept-alive connection, the same way on the host and inside the stack.

Standard library only: the benchmark runs this file with the host's Python and sends its source as
`python3 -c` into a container on the stack's private network (the APC images have python3), so the
client is the same code on every path it measures. Bounded by a request count and a clock.

    python http_probe.py '{"scheme": "https", "host": "127.0.0.1", "port": 38443, "host_header":
        "localhost", "path": "/api/health/", "count": 2000, "warmup": 100, "max_seconds": 120}'

prints one JSON object: {"latencies": [seconds of each timed 200 reply], "errors": {kind: count}}.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import time
from collections import Counter
from typing import Any


def connect(args: dict[str, Any]) -> http.client.HTTPConnection:
    if args["scheme"] == "https":
        context = ssl.create_default_context()
        context.check_hostname = False  # the stacks' certificates are self-signed
        context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(args["host"], args["port"], timeout=5, context=context)
    return http.client.HTTPConnection(args["host"], args["port"], timeout=5)


def probe(args: dict[str, Any]) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + float(args["max_seconds"])
    headers = {"Host": args["host_header"]}
    connection = connect(args)
    for number in range(int(args["warmup"]) + int(args["count"])):
        if time.monotonic() > deadline:
            errors["stopped by the clock"] += 1
            break
        began = time.perf_counter()
        try:
            connection.request("GET", args["path"], headers=headers)
            reply = connection.getresponse()
            reply.read()
            error = None if reply.status == 200 else f"HTTP {reply.status}"
        except (OSError, http.client.HTTPException) as exc:
            error = type(exc).__name__
            connection.close()
            connection = connect(args)
        elapsed = time.perf_counter() - began
        if number < int(args["warmup"]):
            continue
        if error is None:
            latencies.append(elapsed)
        else:
            errors[error] += 1
    connection.close()
    return {"latencies": latencies, "errors": dict(errors)}


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(sys.argv[1]))))
