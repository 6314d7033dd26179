"""The Celery app of the demo backend: `celery -A backend worker` (CELERY_APP=backend).

Its configuration is the CELERY_* Django settings that deploystack.contrib.django computes
from the environment (broker, result backend, acks_late, ...).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

app = Celery("backend")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # the tasks.py module of every installed app
