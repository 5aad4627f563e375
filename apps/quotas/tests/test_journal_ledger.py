"""The /v1 journal drain writes complete ledger rows: feature, model, cost, and no team for keys."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import redis

from apps.quotas.journal import usage_journal_drain, usage_record_write
from apps.quotas.tests.test_journal import add, entry, rows, stream  # noqa: F401  (fixture)
from apps.registry import snapshot
from apps.registry.models import Deployment, Model, Vendor
from apps.tenancy.models import Team
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user


def _priced_deployment() -> Deployment:
    vendor = Vendor.objects.create(name="ledger vendor")
    model = Model.objects.create(
        vendor=vendor,
        name="cloud-chat",
        family="Cloud",
        version="1",
        license="commercial",
        context_window=8192,
        clearance=1,
        price_input_per_1m=Decimal("100"),
        price_output_per_1m=Decimal("400"),
    )
    deployment = Deployment.objects.create(
        model=model, name="cloud-chat-api", base_url="https://api.example.com", clearance=1, zone="external"
    )
    snapshot.reset_for_tests()
    return deployment


def test_drained_rows_carry_feature_model_and_cost(
    stream: redis.Redis,  # noqa: F811
    ministries: tuple[Any, Any],
) -> None:
    a, _ = ministries
    deployment = _priced_deployment()
    served = entry(a, api_key_id=None, deployment_id=deployment.pk, prompt_tokens=1000)
    add(stream, b"s", served)
    served.status, served.completion_tokens = "ok", 500
    add(stream, b"f", served)
    # Lost after its started entry: settled with the estimated prompt, priced the same way.
    lost = entry(a, deployment_id=deployment.pk, prompt_tokens=2000, prompt_tokens_estimated=True)
    add(stream, b"s", lost)
    usage_journal_drain(settle_after=0)
    by_id = {str(r.request_id).replace("-", ""): r for r in rows(a)}
    row = by_id[served.request_id]
    # 1,000 × 100 / 1e6 + 500 × 400 / 1e6 = 0.1 + 0.2
    assert (row.feature, row.model_name, row.cost_yen) == ("api", "cloud-chat", Decimal("0.3000"))
    settled = by_id[lost.request_id]
    assert (settled.status, settled.cost_yen, settled.model_name) == (
        "interrupted",
        Decimal("0.2000"),
        "cloud-chat",
    )


def test_given_cost_model_and_team_are_kept_but_keys_have_no_team(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    user = make_user("team-user", a, ["staff"])
    with ministry_scope(ministry_id=a.pk):
        team = Team.objects.create(code="kikaku", name="企画課")
    by_user = entry(
        a, user_id=user.pk, team_id=team.pk, status="ok", feature="chat", cost_yen="1.25", model_name="m"
    )
    by_key = entry(a, api_key_id=None, team_id=team.pk, status="ok")
    by_key.api_key_id = _key(a)
    usage_record_write(entries=[by_user, by_key])
    found = {str(r.request_id).replace("-", ""): r for r in rows(a)}
    mine = found[by_user.request_id]
    assert (mine.team_id, mine.feature, mine.cost_yen, mine.model_name) == (
        team.pk,
        "chat",
        Decimal("1.25"),
        "m",
    )
    keyed = found[by_key.request_id]
    assert (keyed.team_id, keyed.feature, keyed.model_name, keyed.cost_yen) == (None, "api", "", Decimal(0))


def _key(ministry: Any) -> int:
    from datetime import timedelta

    from django.utils import timezone

    from apps.gateway.services import api_key_create

    key, _plaintext = api_key_create(
        actor=None, ministry=ministry, name="ledger", expires_at=timezone.now() + timedelta(days=1)
    )
    return int(key.pk)
