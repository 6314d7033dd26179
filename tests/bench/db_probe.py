"""Replication lag of single-row commits, measured from inside the stack's private network (run with
`python3 -c` in the benchmark's probe container, which has psycopg): one JSON argument
{"primary", "replica", "user", "password", "database", "count", "warmup", "max_seconds", "timeout_s"},
JSON on stdout: {"lags": [s...], "commits": [s...], "timeouts": n}.

Each sample: one INSERT committed on the primary (autocommit), then the replica polled tightly (one
indexed SELECT per round trip) until the row is visible; lag = visible - commit returned. Bounded by
count, by max_seconds, and per sample by timeout_s.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import psycopg


def main(args: dict[str, Any]) -> dict[str, Any]:
    def connect(host: str) -> psycopg.Connection[Any]:
        return psycopg.connect(host=host, port=5432, user=args["user"], password=args["password"],
                               dbname=args["database"], autocommit=True, connect_timeout=10)

    primary, replica = connect(args["primary"]), connect(args["replica"])
    table = "bench_lag"
    primary.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
    deadline = time.monotonic() + args["max_seconds"]
    while time.monotonic() < deadline:  # the table on the replica before the first sample
        if (replica.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() or (False,))[0]:
            break
        time.sleep(0.01)
    lags: list[float] = []
    commits: list[float] = []
    timeouts = 0
    write, read = primary.cursor(), replica.cursor()
    for index in range(args["warmup"] + args["count"]):
        if time.monotonic() > deadline:
            break
        began = time.perf_counter()
        inserted = write.execute(f"INSERT INTO {table} DEFAULT VALUES RETURNING id").fetchone()
        assert inserted is not None
        row_id = inserted[0]
        committed = time.perf_counter()
        limit = committed + args["timeout_s"]
        seen = False
        while time.perf_counter() < limit:
            if read.execute(f"SELECT 1 FROM {table} WHERE id = %s", (row_id,)).fetchone():
                seen = True
                break
        visible = time.perf_counter()
        if index < args["warmup"]:
            continue
        if seen:
            lags.append(visible - committed)
            commits.append(committed - began)
        else:
            timeouts += 1
    primary.execute(f"DROP TABLE IF EXISTS {table}")
    return {"lags": lags, "commits": commits, "timeouts": timeouts}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
