"""Middleware for apps deployed by deploystack."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, Error, connections
from django.http import HttpRequest, HttpResponse

from .conf import HEALTH_PATH
from .router import start_request

GetResponse = Callable[[HttpRequest], HttpResponse]


class HealthCheckMiddleware:
    """Answer ``GET /healthz`` with 200 ``ok``; ``?db=1`` also runs ``SELECT 1`` on the primary.

    Must come first in MIDDLEWARE (use ``with_health``): it answers before anything calls
    ``request.get_host()``, so a check sent with a container name as Host is not rejected
    by ALLOWED_HOSTS.
    """

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        path = getattr(settings, "DEPLOYSTACK_HEALTH_PATH", HEALTH_PATH).rstrip("/")
        self.paths = {path, f"{path}/"}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info not in self.paths or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        if request.GET.get("db") == "1" and not _database_answers():
            return _plain("database unavailable", status=503)
        return _plain("ok", status=200)


class ReadYourWritesMiddleware:
    """Start each request with no recorded write, so reads go back to the replicas."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start_request()
        return self.get_response(request)


def _database_answers() -> bool:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Error:
        return False
    return True


def _plain(text: str, status: int) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain")
    response["Cache-Control"] = "no-store"
    return response
