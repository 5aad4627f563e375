"""Attacks on the four-eyes rule: moving an approved destination, changing a target while pending."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import translation

from apps.registry import approvals, services
from apps.registry.models import ChangeRequest, Deployment
from apps.registry.tests.test_services import (  # noqa: F401
    clean_registry_state,
    make_alias,
    make_deployment,
)
from tests.support.fixtures import make_user

pytestmark = pytest.mark.django_db

ELSEWHERE = "http://127.0.0.2:8000"


@pytest.fixture(autouse=True)
def japanese() -> Iterator[None]:
    with translation.override("ja"):
        yield


@pytest.fixture
def people(ministries: Any) -> dict[str, Any]:
    a, b = ministries
    return {
        "a": make_user("officer-a", a, ["staff", "procurement_officer"]),
        "b": make_user("officer-b", b, ["staff", "procurement_officer"]),
    }


def fresh(deployment: Deployment) -> Deployment:
    return Deployment.objects.select_related("model").get(pk=deployment.pk)


@pytest.mark.parametrize("field", ["base_url", "served_model_name", "model"])
def test_a_cleared_deployment_is_not_repointed_without_a_second_person(
    people: dict[str, Any], field: str
) -> None:
    # Cleared to 機密性3 (by the system here; by two people in production), on-prem, unrouted.
    deployment = make_deployment("d1", clearance=3)
    other_model = make_deployment("d2", clearance=1).model
    value: Any = {"base_url": ELSEWHERE, "served_model_name": "other", "model": other_model}[field]
    with pytest.raises(ValidationError) as refused:
        services.deployment_save(actor=people["a"], deployment=fresh(deployment), **{field: value})
    assert field in refused.value.message_dict
    assert "機密性2以上" in refused.value.message_dict[field][0]
    after = fresh(deployment)
    assert (after.base_url, after.served_model_name, after.model_id, after.clearance) == (
        deployment.base_url,
        deployment.served_model_name,
        deployment.model_id,
        3,
    )


def test_lowering_to_level_1_while_moving_is_allowed_and_raising_again_is_proposed(
    people: dict[str, Any],
) -> None:
    deployment = make_deployment("d1", clearance=3)
    services.deployment_save(actor=people["a"], deployment=fresh(deployment), base_url=ELSEWHERE, clearance=1)
    after = fresh(deployment)
    assert (after.base_url, after.clearance) == (ELSEWHERE, 1)
    services.deployment_save(actor=people["a"], deployment=after, clearance=3, reason="移設先も閉域")
    assert fresh(deployment).clearance == 1
    change = ChangeRequest.objects.get(deployment=deployment, status="pending")
    assert change.payload["destination"]["base_url"] == ELSEWHERE


def test_a_level_1_unrouted_deployment_still_moves_freely_and_the_system_may_move_any(
    people: dict[str, Any],
) -> None:
    plain = make_deployment("d1", clearance=1)
    services.deployment_save(actor=people["a"], deployment=fresh(plain), base_url=ELSEWHERE)
    assert fresh(plain).base_url == ELSEWHERE
    cleared = make_deployment("d2", clearance=3)
    services.deployment_save(actor=None, deployment=fresh(cleared), base_url=ELSEWHERE)  # e.g. `make run`
    assert fresh(cleared).base_url == ELSEWHERE


def test_a_routed_offprem_deployment_is_not_repointed(people: dict[str, Any], ministries: Any) -> None:
    a, _b = ministries
    cloud = make_deployment("cloud", clearance=1)
    services.deployment_save(actor=None, deployment=fresh(cloud), zone="gov_cloud")
    make_alias([(fresh(cloud), 100)], grant=[a])  # approved once (system here)
    with pytest.raises(ValidationError) as refused:
        services.deployment_save(actor=people["a"], deployment=fresh(cloud), base_url=ELSEWHERE)
    assert "オンプレミス外" in refused.value.message_dict["base_url"][0]
    assert fresh(cloud).base_url != ELSEWHERE


def test_a_pending_raise_is_stale_once_the_deployment_points_elsewhere(people: dict[str, Any]) -> None:
    deployment = make_deployment("d1", clearance=1)
    services.deployment_save(actor=people["a"], deployment=fresh(deployment), clearance=3, reason="閉域")
    change = ChangeRequest.objects.get(deployment=deployment, status="pending")
    # While the colleague reads "d1: 機密性1 → 機密性3", the proposer moves d1 (allowed at level 1).
    services.deployment_save(actor=people["a"], deployment=fresh(deployment), base_url=ELSEWHERE)
    with pytest.raises(ValidationError) as stale:
        approvals.change_request_approve(actor=people["b"], change_request=change)
    assert "提案後に対象が変更された" in stale.value.messages[0]
    assert fresh(deployment).clearance == 1
    change.refresh_from_db()
    assert change.status == "pending"


def test_a_pending_offprem_route_is_stale_once_its_deployment_points_elsewhere(
    people: dict[str, Any], ministries: Any
) -> None:
    a, _b = ministries
    local = make_deployment("local", clearance=1)
    alias = make_alias([(fresh(local), 100)], grant=[a])
    external = make_deployment("ext", clearance=1)
    services.deployment_save(actor=None, deployment=fresh(external), zone="external")
    change = services.alias_set_routes(
        actor=people["a"], alias=alias, routes=[(fresh(local), 90), (fresh(external), 10)], reason="比較"
    )
    assert isinstance(change, ChangeRequest)
    services.deployment_save(actor=people["a"], deployment=fresh(external), base_url=ELSEWHERE)
    with pytest.raises(ValidationError):
        approvals.change_request_approve(actor=people["b"], change_request=change)
    alias.refresh_from_db()
    assert alias.current_revision is not None
    assert set(alias.current_revision.routes.values_list("deployment_id", flat=True)) == {local.pk}


def test_unchanged_destination_still_approves(people: dict[str, Any], ministries: Any) -> None:
    deployment = make_deployment("d1", clearance=1)
    services.deployment_save(actor=people["a"], deployment=fresh(deployment), clearance=3, reason="閉域")
    change = ChangeRequest.objects.get(deployment=deployment, status="pending")
    services.deployment_save(actor=people["a"], deployment=fresh(deployment), max_concurrency=4)
    approvals.change_request_approve(actor=people["b"], change_request=change)
    assert fresh(deployment).clearance == 3


def test_the_edit_form_shows_the_refusal_on_the_field(people: dict[str, Any]) -> None:
    deployment = fresh(make_deployment("d1", clearance=3))
    form = {
        "model": deployment.model_id,
        "name": deployment.name,
        "provider": deployment.provider,
        "base_url": ELSEWHERE,
        "served_model_name": deployment.served_model_name,
        "secret_ref": "",
        "zone": "on_prem",
        "clearance": "3",
        "max_concurrency": str(deployment.max_concurrency),
        "enabled": "on",
        "reason": "",
    }
    client = Client()
    client.force_login(people["a"])
    response = client.post(reverse("registry:deployment_edit", args=[deployment.pk]), form)
    assert response.status_code == 400
    assert "機密性2以上のデプロイメントの接続先" in response.content.decode()
    assert fresh(deployment).base_url != ELSEWHERE


def test_the_approver_sees_where_the_raise_would_apply(people: dict[str, Any]) -> None:
    deployment = make_deployment("d1", clearance=1)
    services.deployment_save(actor=people["a"], deployment=fresh(deployment), clearance=3, reason="閉域")
    client = Client()
    client.force_login(people["b"])
    page = client.get(reverse("registry:change_list")).content.decode()
    assert 'data-testid="change-destination"' in page
    assert f"{deployment.base_url} · {deployment.served_model_name}" in page
