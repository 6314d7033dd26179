"""WSGI entry point: `bff.wsgi:application` (APP_WSGI)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bff.settings")

application = get_wsgi_application()
