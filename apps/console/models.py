"""Ministry-admin console data."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from apps.tenancy.models import TenantModel


class Announcement(TenantModel):
    """A notice a ministry admin posts to their ministry's staff (お知らせ)."""

    title = models.CharField(_("件名"), max_length=200)
    body = models.TextField(_("本文"), max_length=10_000)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Home page: "latest announcements of my ministry".
        indexes = [models.Index(fields=["ministry", "-created_at"], name="announcement_ministry_new_idx")]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("console:announcement_detail", args=[self.pk])


# In-app notifications have their own module (owner: quota alerts); imported here so
# Django registers them as models of this app.
from .notification_models import *  # noqa: E402,F403
