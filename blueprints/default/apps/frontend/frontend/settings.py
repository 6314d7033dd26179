"""Settings of the demo frontend (a Vue page); the environment comes from deploystack."""

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

ROOT_URLCONF = "frontend.urls"
WSGI_APPLICATION = "frontend.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# static/vendor/ holds Vue, vendored at build time (see README.md): no CDN at run time.
STATICFILES_DIRS = [BASE_DIR / "static"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
