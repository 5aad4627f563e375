"""Usage records take their ministry from the scope only."""

from __future__ import annotations

from typing import Any

import pytest

from apps.quotas.models import UsageRecord
from apps.quotas.services import usage_record_create
from apps.tenancy.scope import ScopeError, ministry_scope


def test_usage_record_needs_a_scope_and_uses_it(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    with pytest.raises(ScopeError):
        usage_record_create(alias_name="standard-chat", status="ok")
    with ministry_scope(ministry_id=a.pk):
        record = usage_record_create(
            alias_name="standard-chat", status="ok", prompt_tokens=-1, completion_tokens=3, latency_ms=12
        )
    assert (record.ministry_id, record.prompt_tokens, record.completion_tokens) == (a.pk, 0, 3)
    with ministry_scope(ministry_id=b.pk):
        assert not UsageRecord.objects.exists()
