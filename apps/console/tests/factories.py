"""Unsaved rows for the tenancy sweep (tests/test_tenancy_sweep.py): notifications."""

from __future__ import annotations

from typing import Any

from apps.console.models import Notification, NotificationKind


def sweep_notification(ministry: Any) -> Notification:
    from apps.accounts.models import User

    user, _ = User.objects.get_or_create(
        username="sweep-notified", defaults={"subject": "sub-sweep-notified"}
    )
    return Notification(
        ministry=ministry, recipient=user, kind=NotificationKind.BUDGET_WARNING, dedupe_key="sweep"
    )
