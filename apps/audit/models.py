"""Append-only, hash-chained audit log of everything a human changes."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """One audited change.

    Append-only: the application role has no UPDATE/DELETE on this table (see
    ``apps.tenancy.grants``). ``hash`` = sha256(prev_hash + canonical JSON of the
    event), so any edit or deletion breaks the chain that
    :func:`apps.audit.services.audit_verify_chain` walks.
    """

    # Set before hashing (not auto_now_add, which is assigned only inside save()):
    # the time is part of the hashed payload, so backdating an event breaks the chain.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # PROTECT: users are deactivated, never deleted, and audit rows cannot be updated.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    actor_label = models.CharField(max_length=150, blank=True)
    ministry = models.ForeignKey("tenancy.Ministry", null=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100)
    target_id = models.CharField(max_length=100, blank=True)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        # Console: "events of my ministry, newest first"; registry history per target.
        indexes = [
            models.Index(fields=["ministry", "-id"], name="audit_ministry_idx"),
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"
