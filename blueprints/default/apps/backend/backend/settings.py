"""Settings of the demo backend (Django REST framework); the environment comes from deploystack.

settings_from_env also gives the cache, STORAGES (media in the S3 bucket) and CELERY_* (read by
backend/celery.py), so the services app needs nothing more here.
"""

from pathlib import Path

from deploystack.contrib.django import settings_from_env, with_health

BASE_DIR = Path(__file__).resolve().parent.parent
globals().update(settings_from_env(BASE_DIR))

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "rest_framework",
    "notes",
    "services",
]

MIDDLEWARE = with_health(
    [
        "django.middleware.security.SecurityMiddleware",
        "deploystack.contrib.django.middleware.ReadYourWritesMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
)

ROOT_URLCONF = "backend.urls"
WSGI_APPLICATION = "backend.wsgi.application"

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

# A JSON API with no users: no browsable API (its static files would live under the
# frontend's /static/), no session or CSRF machinery, no django.contrib.auth tables.
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}
