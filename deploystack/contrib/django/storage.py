"""The media storage of a deploystack app: django-storages' S3 storage, public URLs under MEDIA_URL.

Needs django-storages and boto3, so nothing imports this module but Django itself, through
``STORAGES["default"]["BACKEND"]`` (``settings_from_env`` names it when S3_ENDPOINT_URL is set).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from .conf import media_url


class MediaStorage(S3Storage):  # type: ignore[misc]  # django-storages has no type information
    """S3 storage whose files are served by the load balancer at MEDIA_URL + key.

    The LBC proxies ``/media/<key>`` to the public-read bucket, so a URL needs no signature,
    no bucket name and no host: ``url("uploads/a.png")`` is ``/media/uploads/a.png``.
    The ``media_url`` option (default: the MEDIA_URL setting) sets the prefix.
    """

    def get_default_settings(self) -> dict[str, Any]:
        defaults: dict[str, Any] = super().get_default_settings()
        return {**defaults, "media_url": getattr(settings, "MEDIA_URL", None) or "/media/"}

    def url(
        self,
        name: str,
        parameters: dict[str, Any] | None = None,
        expire: int | None = None,
        http_method: str | None = None,
    ) -> str:
        # The object's key: the storage's `location` (if any) + the cleaned name.
        key: str = self._normalize_name(clean_name(name))
        return media_url(self.media_url, key)
