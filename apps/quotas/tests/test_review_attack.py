"""Attacks on the quotas app found in review: each test failed before its fix."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

import pytest

from apps.quotas.models import UsageRecord
from apps.quotas.rollups import local_today, local_zone
from apps.quotas.selectors import usage_csv_rows
from apps.tenancy.models import Membership
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user


def _reader(ministry: Any, name: str) -> Membership:
    user = make_user(name, ministry, ["ministry_auditor"])
    return Membership.objects.get(user=user, ministry=ministry)


def _now_local() -> datetime:
    return datetime.combine(local_today(), time(9, 0), tzinfo=local_zone())


@pytest.mark.parametrize(
    ("group_by", "field", "value"),
    [
        ("alias", "alias_name", "=HYPERLINK(1)"),
        ("model", "model_name", "@SUM(1+1)*cmd|' /C calc'!A0"),
        ("model", "model_name", "-2+3+cmd|' /C calc'!A0"),
        ("feature", "feature", "+1+1"),
    ],
)
def test_csv_key_column_is_neutralised_like_the_label(
    ministries: tuple[Any, Any], group_by: str, field: str, value: str
) -> None:
    """The ``key`` column of a text group (alias, model, feature) is the same text as the label:
    it was written as is, so a model name registered by a procurement officer (or any text that
    reaches the ledger) ran as a formula in the admin's spreadsheet."""
    a, _ = ministries
    reader = _reader(a, "csv-key-reader")
    with ministry_scope(ministry_id=a.pk):
        UsageRecord.objects.create(**{field: value}, status="ok", created_at=_now_local())
    lines = list(usage_csv_rows(actor=reader, start=local_today(), end=local_today(), group_by=group_by))
    header, row = lines[0], lines[1]
    assert row[header.index("key")] == "'" + value
    assert row[header.index("label")] == "'" + value


def test_csv_full_width_formula_signs_are_neutralised(ministries: tuple[Any, Any]) -> None:
    """Japanese spreadsheets take full-width ＝ ＋ － ＠ as formula signs too."""
    a, _ = ministries
    reader = _reader(a, "csv-fw-reader")
    with ministry_scope(ministry_id=a.pk):
        UsageRecord.objects.create(alias_name="＝HYPERLINK(1)", status="ok", created_at=_now_local())
    lines = list(usage_csv_rows(actor=reader, start=local_today(), end=local_today(), group_by="alias"))
    assert lines[1][2] == "'＝HYPERLINK(1)"
    assert lines[1][3] == "'＝HYPERLINK(1)"


def test_csv_plain_keys_are_unchanged(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    reader = _reader(a, "csv-plain-reader")
    with ministry_scope(ministry_id=a.pk):
        UsageRecord.objects.create(alias_name="standard-chat", status="ok", created_at=_now_local())
    lines = list(usage_csv_rows(actor=reader, start=local_today(), end=local_today(), group_by="alias"))
    assert lines[1][2:4] == ["standard-chat", "standard-chat"]
