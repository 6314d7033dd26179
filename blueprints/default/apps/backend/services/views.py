"""The demo of the stack's services, one endpoint each (the LBC routes /api/ here):

GET  /api/cached/<key>/  {"key", "value"}: computed once, then read from Django's default cache
                         (Redis or Memcached in a stack) for CACHE_TTL seconds; X-Cache: MISS or HIT
POST /api/tasks/         {"x": 20, "y": 22, "sleep": 0} -> 202 {"id"}: a Celery worker adds them
GET  /api/tasks/<id>/    {"id", "status"} (PENDING, STARTED, SUCCESS, FAILURE, ...), with "result"
                         once it succeeded ("error" if it failed); an unknown id stays PENDING
POST /api/media/         the request body is the file (or a multipart "file" field) -> 201
                         {"key", "url", "size"}: stored through Django's default storage (the S3
                         bucket in a stack), and the LBC serves it at "url" (MEDIA_URL + key)
"""

import hashlib
import re
import tempfile
import uuid
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.files import File
from django.core.files.storage import default_storage
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from .tasks import MAX_SLEEP, add, slow_add

CACHE_TTL = 300  # seconds
CACHE_PREFIX = "demo:cached:"
_CACHE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # safe for Memcached's key rules too

UPLOAD_PREFIX = "uploads/"
_READ_CHUNK = 64 * 1024
# `curl --data-binary @file` says the body is a form: store such bodies as plain bytes.
_NOT_A_FILE_TYPE = {"", "application/x-www-form-urlencoded"}


# cache ----------------------------------------------------------------------------------


@api_view(["GET"])
def cached(request: Request, key: str) -> Response:
    if not _CACHE_KEY.fullmatch(key):
        return Response({"detail": "key: 1 to 100 letters, digits, '_', '.' or '-'"}, status=400)
    value = cache.get(CACHE_PREFIX + key)
    state = "HIT"
    if value is None:
        value = _compute(key)
        cache.set(CACHE_PREFIX + key, value, CACHE_TTL)
        state = "MISS"
    # no-store: the header speaks of Django's cache, so nothing between must answer for us.
    return Response({"key": key, "value": value}, headers={"X-Cache": state, "Cache-Control": "no-store"})


def _compute(key: str) -> str:
    """Stands for an expensive computation: the same key always gives the same value."""
    return hashlib.sha256(key.encode()).hexdigest()


# tasks ----------------------------------------------------------------------------------


class AddSerializer(serializers.Serializer):
    x = serializers.IntegerField()
    y = serializers.IntegerField()
    sleep = serializers.FloatField(required=False, default=0.0, min_value=0.0, max_value=MAX_SLEEP)


@api_view(["POST"])
def task_create(request: Request) -> Response:
    serializer = AddSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    x, y, sleep = (serializer.validated_data[name] for name in ("x", "y", "sleep"))
    try:
        result = slow_add.delay(x, y, sleep) if sleep else add.delay(x, y)
    except OperationalError as exc:  # the broker did not take the task
        return Response({"detail": f"task queue unavailable: {exc}"}, status=503)
    return Response({"id": result.id}, status=202, headers={"Location": f"{request.path}{result.id}/"})


@api_view(["GET"])
def task_detail(request: Request, task_id: uuid.UUID) -> Response:
    result = add.AsyncResult(str(task_id))  # any task of the app reads any task's result
    state = result.state
    body: dict[str, Any] = {"id": result.id, "status": state}
    if state == "SUCCESS":
        body["result"] = result.result
    elif state == "FAILURE":
        body["error"] = f"{type(result.result).__name__}: {result.result}"
    return Response(body, headers={"Cache-Control": "no-store"})


# media ----------------------------------------------------------------------------------


@csrf_exempt
@require_POST
def media_upload(request: HttpRequest) -> JsonResponse:
    """Store one file under a new unique key; the body size limit is the LBC's."""
    if request.content_type == "multipart/form-data":
        upload = request.FILES.get("file")
        if upload is None:
            return JsonResponse({"detail": "a multipart upload needs a 'file' field"}, status=400)
        with upload:
            return _store(upload, upload.size)
    # Not request.body: its DATA_UPLOAD_MAX_MEMORY_SIZE limit is meant for forms, not files.
    # The copy stays in memory while small and goes to disk after.
    with tempfile.SpooledTemporaryFile(
        max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, dir=settings.FILE_UPLOAD_TEMP_DIR
    ) as spool:
        size = 0
        while chunk := request.read(_READ_CHUNK):
            spool.write(chunk)
            size += len(chunk)
        spool.seek(0)
        content = File(spool)
        # The object store keeps it as the object's Content-Type, which the LBC serves back.
        content_type = request.content_type or ""
        content.content_type = "application/octet-stream" if content_type in _NOT_A_FILE_TYPE else content_type
        return _store(content, size)


def _store(content: File, size: int) -> JsonResponse:
    if not size:
        return JsonResponse(
            {"detail": "empty body: send the file as the request body, or as the multipart field 'file'"},
            status=400,
        )
    key = default_storage.save(f"{UPLOAD_PREFIX}{uuid.uuid4()}", content)
    return JsonResponse({"key": key, "url": default_storage.url(key), "size": size}, status=201)
