import os
from pathlib import Path
from typing import Any

from django.db.models import QuerySet
from rest_framework import generics
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from deploystack.contrib.django.router import pin_to_primary, retry_on_primary, used_alias

from .models import Note
from .serializers import NoteSerializer

LIST_LIMIT = 100


class NoteList(generics.ListCreateAPIView):
    """GET: the latest notes, newest first; POST {"text": ...}: 201 {"id", "text"}."""

    serializer_class = NoteSerializer

    def get_queryset(self) -> QuerySet[Note]:
        return Note.objects.order_by("-id")[:LIST_LIMIT]


class NoteDetail(generics.RetrieveAPIView):
    """GET one note; X-DB-Alias names the database alias that served the read."""

    serializer_class = NoteSerializer

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # A replica that dies under the query costs a retry on the primary, not a failed request.
        note = retry_on_primary(lambda: Note.objects.filter(pk=kwargs["pk"]).first())
        if note is None and used_alias.get() != "default":
            # A replica may lag behind the primary: a note created a moment ago may be
            # missing there, so ask the primary before answering 404.
            with pin_to_primary():
                note = Note.objects.filter(pk=kwargs["pk"]).first()
        alias = used_alias.get()
        if note is None:
            return Response({"detail": "Not found."}, status=404, headers={"X-DB-Alias": alias})
        return Response(self.get_serializer(note).data, headers={"X-DB-Alias": alias})


@api_view(["GET"])
def health(request: Request) -> Response:
    return Response({"app": "backend"})


# A VERSION file at the project's top, when its repository has one (the CDC tests' pushes change it).
VERSION_FILE = Path(__file__).resolve().parent.parent / "VERSION"


@api_view(["GET"])
def version(request: Request) -> Response:
    """APP_VERSION from the environment, else the VERSION file, else "dev"."""
    found = os.environ.get("APP_VERSION")
    if not found and VERSION_FILE.is_file():
        found = VERSION_FILE.read_text(encoding="utf-8").strip()
    return Response({"version": found or "dev"})
