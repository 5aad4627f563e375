"""People and data for the insight page tests: roles of two ministries, platform roles, usage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from html import unescape
from typing import Any

from django.test import Client
from django.utils import timezone

from tests.support.fixtures import make_user


@dataclass
class People:
    a: Any
    b: Any
    staff_a: Any
    admin_a: Any
    auditor_a: Any
    admin_b: Any
    procurement_a: Any
    platform_auditor: Any  # realm role "auditor", home ministry A
    platform_admin: Any  # realm role "platform_admin", home ministry B


def make_people(ministries: tuple[Any, Any]) -> People:
    a, b = ministries
    return People(
        a=a,
        b=b,
        staff_a=make_user("ins-staff-a", a, ["staff"]),
        admin_a=make_user("ins-admin-a", a, ["staff", "ministry_admin"]),
        auditor_a=make_user("ins-auditor-a", a, ["staff", "ministry_auditor"]),
        admin_b=make_user("ins-admin-b", b, ["staff", "ministry_admin"]),
        procurement_a=make_user("ins-procurement-a", a, ["procurement_officer", "staff"]),
        platform_auditor=make_user("ins-platform-auditor", a, ["auditor", "staff"]),
        platform_admin=make_user("ins-platform-admin", b, ["platform_admin", "staff"]),
    )


def client_for(user: Any | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def today_at(hour: int) -> datetime:
    return datetime.combine(timezone.localdate(), time(hour, 0), tzinfo=timezone.get_default_timezone())


def add_usage(
    ministry: Any, *, model: str, prompt: int, completion: int, user: Any = None, n: int = 1
) -> None:
    """``n`` finished model calls of ``ministry`` today (raw ledger rows; the dashboard reads today raw)."""
    from apps.quotas.models import UsageRecord
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=ministry.pk):
        UsageRecord.objects.bulk_create(
            UsageRecord(
                ministry=ministry,
                alias_name="standard-chat",
                model_name=model,
                feature="chat",
                user=user,
                status="ok",
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_yen=Decimal("1.5"),
                latency_ms=100,
                created_at=today_at(10),
            )
            for _ in range(n)
        )


def chart_json(html: str) -> dict[str, Any]:
    """The Chart.js data the page embedded in the canvas's ``data-chart`` attribute."""
    match = re.search(r'<canvas id="usage-chart"[^>]*\sdata-chart="([^"]*)"', html)
    assert match, "the usage page must embed its chart data"
    data: dict[str, Any] = json.loads(unescape(match.group(1)))
    return data
