"""Settings of the demo backend (Django REST framework); the environment comes from deploystack.

settings_from_env also gives the cache, STORAGES (media in the S3 bucket) and CELERY_* (read by
backend/celery.py), so the services app needs nothing more here.
"""

from pathlib import Path

from deploystack.contrib.django import settings_from_env, with_health

BASE_DIR = Path(__file__).resolve().parent.parent
globals().update(settings_from_env(BASE_DIR))

INSTALLED_APPS = [
    # The admin, at /api/admin/ (the LBC routes /api/ here): `deploystack manage backend createsuperuser`.
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "notes",
    "services",
]

MIDDLEWARE = with_health(
    [
        "django.middleware.security.SecurityMiddleware",
        "deploystack.contrib.django.middleware.ReadYourWritesMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
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
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# Sessions are read from the cache first: a replica that lags a moment behind the login's write
# cannot log the user out again on the next request.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# A JSON API with no API users: no browsable API (its static files would live under the frontend's
# /static/), no authentication, so no CSRF checks on its views; users log in to the admin only.
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}
