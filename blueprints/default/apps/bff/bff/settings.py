"""Settings of the demo BFF (backend for a mobile client); environment from deploystack."""

import os
from pathlib import Path

from deploystack.contrib.django import settings_from_env, with_health

BASE_DIR = Path(__file__).resolve().parent.parent
globals().update(settings_from_env(BASE_DIR))

INSTALLED_APPS = ["django.contrib.staticfiles"]

MIDDLEWARE = with_health(
    [
        "django.middleware.security.SecurityMiddleware",
        "deploystack.contrib.django.middleware.ReadYourWritesMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
)

ROOT_URLCONF = "bff.urls"
WSGI_APPLICATION = "bff.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# deploystack sets APC_<APP>_URL for every other app of the stack.
BACKEND_URL = os.environ.get("APC_BACKEND_URL", "http://backend:8000").rstrip("/")
BACKEND_TIMEOUT = 2.0  # seconds
