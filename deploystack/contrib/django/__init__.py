"""Django glue for apps deployed by deploystack.

Wire it into a project's settings.py in two lines::

    from deploystack.contrib.django import settings_from_env
    globals().update(settings_from_env(BASE_DIR))

settings_from_env returns no MIDDLEWARE (the project owns that list); wrap it instead::

    MIDDLEWARE = with_health([..., READ_YOUR_WRITES_MIDDLEWARE, ...])

It also returns the CELERY_* settings for a Celery app configured the usual way
(``app.config_from_object("django.conf:settings", namespace="CELERY")``) and STORAGES, whose
media storage (MEDIA_STORAGE, S3 through django-storages) Django imports by its dotted path
only when a file is stored.

This module imports nothing but Django, so importing it from settings.py is safe.
"""

from .conf import (
    HEALTH_PATH,
    MEDIA_STORAGE,
    MIDDLEWARE_FIRST,
    READ_YOUR_WRITES_MIDDLEWARE,
    ROUTER,
    media_url,
    settings_from_env,
    with_health,
)

__all__ = [
    "HEALTH_PATH",
    "MEDIA_STORAGE",
    "MIDDLEWARE_FIRST",
    "READ_YOUR_WRITES_MIDDLEWARE",
    "ROUTER",
    "media_url",
    "settings_from_env",
    "with_health",
]
