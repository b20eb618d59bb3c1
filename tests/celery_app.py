"""The Celery app of the signals tests: ``celery -A tests.celery_app worker -Q celery-tests``
with ``DJANGO_SETTINGS_MODULE=tests.celery_settings`` (Celery's Django fix-up sets Django up)."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("trio_djws_tests")
app.conf.broker_url = os.environ.get("TRIO_DJWS_REDIS_URL", "redis://127.0.0.1:6379/0")
app.conf.include = ["trio_djws.tasks"]
app.conf.task_serializer = "json"
app.conf.broker_connection_retry_on_startup = True
