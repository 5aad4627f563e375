"""Celery application. Tasks touching tenant data use apps.tenancy.tasks.TenantTask."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gennai.settings.prod")

app = Celery("gennai")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
