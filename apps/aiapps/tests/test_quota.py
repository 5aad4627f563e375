"""AI app runs under budgets: reserved and settled through admission, 429 before anything is saved."""

from __future__ import annotations

from typing import Any

import redis

from apps.aiapps.models import AppRun, PlatformApp
from apps.chat.tests.factories import run_stream
from apps.quotas import admission
from apps.quotas.tests.admission_support import (  # noqa: F401  (quota_redis_fixture provides quota_redis)
    admin_of,
    quota_redis_fixture,
    set_limit,
)
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

from .conftest import client_for
from .test_runs import _run_of


def _used(actor: Actor) -> int:
    lines = admission.budget_status(ministry_id=actor.ministry.pk, user_id=actor.user.pk)
    (line,) = [line for line in lines if line.level == "user" and not line.alias_name]
    return line.used_tokens + line.held_tokens


def test_app_run_is_charged_and_refused_over_budget(staff_a: Actor, quota_redis: redis.Redis) -> None:
    admin = admin_of(staff_a.ministry, "quota-admin-a")
    set_limit(staff_a.ministry, admin, level="user", user=staff_a.user, monthly_tokens=100_000)
    ref = f"p{PlatformApp.objects.get(key='translate').pk}"
    with FakeUpstream(tokens=5) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        data: dict[str, Any] = {
            "alias": reg.alias.name,
            "level": "1",
            "text": "こんにちは",
            "direction": "日本語→英語",
        }
        run = _run_of(staff_a, client_for(staff_a).post(f"/apps/{ref}/", data))
        run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream")
        assert _used(staff_a) == 12  # settled to what the upstream reported: 7 prompt + 5 completion
        set_limit(staff_a.ministry, admin, level="user", user=staff_a.user, monthly_tokens=10)
        refused = client_for(staff_a).post(f"/apps/{ref}/", data)
        assert fake.requests == 1, "no model call for a refused run"
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "利用者の今月の利用上限に達しました" in refused.content.decode()
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert AppRun.objects.count() == 1, "nothing saved for the refused run"
