"""Aggregates backend calls into one reply for a mobile client (standard library HTTP only)."""

import json
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

# Calls stay on the stack's private network: never through an HTTP(S)_PROXY of the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BackendError(Exception):
    """The backend did not give a usable answer."""


def _get_backend(path: str) -> tuple[Any, str | None]:
    """GET a backend path; return its JSON body and its X-Served-By header."""
    request = urllib.request.Request(settings.BACKEND_URL + path, headers={"Accept": "application/json"})
    try:
        with _opener.open(request, timeout=settings.BACKEND_TIMEOUT) as response:
            return json.load(response), response.headers.get("X-Served-By")
    except urllib.error.HTTPError as exc:  # before URLError: it is a subclass
        raise BackendError(f"GET {path}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendError(f"GET {path}: {reason}") from exc
    except ValueError as exc:  # json.JSONDecodeError
        raise BackendError(f"GET {path}: not JSON") from exc


@require_GET
def feed(request: HttpRequest) -> JsonResponse:
    try:
        backend, served_by = _get_backend("/api/health/")
    except BackendError as exc:
        return JsonResponse({"error": "backend unavailable", "detail": str(exc)}, status=502)
    return JsonResponse({"backend": backend, "served_by": served_by})


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "bff"})
