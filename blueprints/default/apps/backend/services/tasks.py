"""Celery tasks of the demo. Both are idempotent: with acks_late, a task whose worker died is run again."""

import time

from celery import shared_task

MAX_SLEEP = 600.0  # seconds; well under the Redis broker's visibility timeout


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def slow_add(x: int, y: int, sleep: float) -> int:
    """``add`` after ``sleep`` seconds: time enough to stop or kill the worker that runs it."""
    time.sleep(min(max(sleep, 0.0), MAX_SLEEP))
    return x + y
