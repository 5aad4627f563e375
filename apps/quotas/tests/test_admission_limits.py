"""Limit services and selectors: who may change what, audit, validation, and the cache admission reads."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.quotas import limits
from apps.quotas.limits import (
    get_limit_for_actor,
    limit_delete,
    limit_set,
    limits_for_ministry,
    ministry_limits,
    platform_limit_set,
)
from apps.quotas.models import Limit
from apps.tenancy import versions
from apps.tenancy.scope import ScopeError, ministry_scope
from tests.support.fixtures import make_user

from .admission_support import admin_of, staff_of, team_with


def test_admin_sets_a_user_limit_audited_with_before_and_after(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    admin, user = admin_of(a), staff_of(a)
    with ministry_scope(ministry_id=a.pk):
        first = limit_set(actor=admin, level="user", user=user, monthly_tokens=1000, rpm=5)
        again = limit_set(actor=admin, level="user", user=user, monthly_tokens=500, monthly_yen="12.345")
        assert again.pk == first.pk, "one row per subject and alias: set replaces"
        assert (again.monthly_tokens, again.rpm, again.monthly_yen) == (500, None, Decimal("12.35"))
        assert again.updated_by == admin
    events = list(AuditEvent.objects.filter(action="quota.limit_set").order_by("id"))
    assert len(events) == 2
    assert events[1].ministry_id == a.pk
    assert events[1].data["before"]["monthly_tokens"] == 1000
    assert events[1].data["after"]["monthly_tokens"] == 500


def test_only_a_ministry_admin_of_the_active_scope_may_write(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    staff, admin_b = staff_of(a), admin_of(b)
    auditor = make_user("auditor-a", a, ["ministry_auditor"])
    with ministry_scope(ministry_id=a.pk):
        for actor in (staff, admin_b, auditor):
            with pytest.raises(PermissionDenied):
                limit_set(actor=actor, level="ministry", rpm=1)
        limits_for_ministry(actor=auditor)  # auditors may read
        with pytest.raises(PermissionDenied):
            limits_for_ministry(actor=staff)
    with pytest.raises(ScopeError):
        limit_set(actor=admin_of(a), level="ministry", rpm=1)  # the ministry comes only from the scope
    assert not AuditEvent.objects.filter(action="quota.limit_set").exists()


def test_another_ministrys_objects_and_rows_are_out_of_reach(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    admin_a, admin_b = admin_of(a), admin_of(b)
    user_b = staff_of(b)
    team_b = team_with(b, "b-team", user_b)
    from apps.gateway.services import api_key_create

    key_b, _ = api_key_create(actor=None, ministry=b, name="k", expires_at=timezone.now() + timedelta(days=1))
    with ministry_scope(ministry_id=b.pk):
        row_b = limit_set(actor=admin_b, level="ministry", rpm=9)
    with ministry_scope(ministry_id=a.pk):
        for refs in (
            {"level": "user", "user": user_b},
            {"level": "team", "team": team_b},
            {"level": "api_key", "api_key": key_b},
        ):
            with pytest.raises(ValidationError):
                limit_set(actor=admin_a, rpm=1, **refs)
        with pytest.raises(Http404):
            get_limit_for_actor(actor=admin_a, limit_id=row_b.pk)
        with pytest.raises(Http404):
            limit_delete(actor=admin_a, limit_id=row_b.pk)
        assert list(limits_for_ministry(actor=admin_a)) == []
    with ministry_scope(ministry_id=b.pk):
        assert Limit.objects.filter(pk=row_b.pk).exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"level": "user", "user": 0},  # no such user
        {"level": "ministry", "user": "x"},  # a subject the level does not take
        {"level": "nope"},
        {"level": "ministry", "rpm": -1},
        {"level": "ministry", "monthly_yen": "NaN"},
        {"level": "ministry", "monthly_tokens": "lots"},
        {"level": "ministry", "alias_name": "not-granted-here"},
    ],
)
def test_invalid_input_is_refused(fields: dict[str, Any], ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    admin = admin_of(a)
    if fields.get("user") == "x":
        fields = {**fields, "user": staff_of(a)}
    with ministry_scope(ministry_id=a.pk), pytest.raises(ValidationError):
        limit_set(actor=admin, **fields)


def test_delete_is_audited_and_bumps_the_cache_version(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    admin = admin_of(a)
    with ministry_scope(ministry_id=a.pk):
        row = limit_set(actor=admin, level="ministry", monthly_tokens=10)
        before = versions.read_version(limits.VERSION_NAME)
        limit_delete(actor=admin, limit_id=row.pk)
        assert versions.read_version(limits.VERSION_NAME) > before
        assert not Limit.objects.filter(pk=row.pk).exists()
    assert AuditEvent.objects.filter(action="quota.limit_delete", target_id=str(row.pk)).exists()


def test_platform_limit_needs_a_platform_admin(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    with pytest.raises(PermissionDenied):
        platform_limit_set(actor=admin_of(a), monthly_tokens=1)
    operator = make_user("operator", a, ["staff", "platform_admin"])
    row = platform_limit_set(actor=operator, alias_name="", monthly_tokens=10**9, max_tokens=8192)
    assert row.max_tokens == 8192
    assert AuditEvent.objects.filter(action="quota.platform_limit_set").count() == 1


def test_a_lowered_limit_reaches_the_cache_when_the_version_moves(
    ministries: tuple[Any, Any], settings: Any
) -> None:
    """Invariant 11: the cache re-reads the PostgreSQL version (not Redis) and drops stale limits."""
    a, _ = ministries
    admin, user = admin_of(a), staff_of(a)
    limits.reset_for_tests()
    settings.GENNAI_CACHE_CHECK_SECONDS = 0  # check the version on every read
    with ministry_scope(ministry_id=a.pk):
        limit_set(actor=admin, level="user", user=user, monthly_tokens=1000)
    assert ministry_limits(a.pk).rows[("user", user.pk, "")].monthly_tokens == 1000
    with ministry_scope(ministry_id=a.pk):
        limit_set(actor=admin, level="user", user=user, monthly_tokens=10)
    assert ministry_limits(a.pk).rows[("user", user.pk, "")].monthly_tokens == 10
    limits.reset_for_tests()
