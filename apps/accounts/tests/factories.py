"""Unsaved rows for the tenancy sweep (tests/test_tenancy_sweep.py): local grants and their policy."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from apps.accounts.models import LocalGrantPolicy, LocalRoleGrant, User


def sweep_local_grant_policy(ministry: Any) -> LocalGrantPolicy:
    return LocalGrantPolicy(ministry=ministry, enabled=True)


def sweep_local_role_grant(ministry: Any) -> LocalRoleGrant:
    user, _ = User.objects.get_or_create(username="sweep-granted", defaults={"subject": "sub-sweep-granted"})
    return LocalRoleGrant(
        ministry=ministry, user=user, role="ministry_auditor", expires_at=timezone.now() + timedelta(days=7)
    )
