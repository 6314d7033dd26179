from django.apps import AppConfig


class ServicesConfig(AppConfig):
    """The demo of the stack's services: Django's cache, Celery tasks, media in the object store."""

    name = "services"
