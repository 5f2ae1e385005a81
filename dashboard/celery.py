"""The Celery application: workers apply the desired state to the cluster."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("stackblaze")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
