"""Four-eyes: clearance raises to 機密性2/3 and off-prem routes wait for a second person."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import translation

from apps.audit.models import AuditEvent
from apps.audit.services import audit_verify_chain
from apps.registry import approvals, services
from apps.registry.models import ChangeRequest, Deployment
from apps.registry.tests.test_services import (  # noqa: F401
    chosen,
    clean_registry_state,
    make_alias,
    make_deployment,
)
from tests.support.fixtures import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def japanese() -> Iterator[None]:
    """Messages are asserted in Japanese (the default), whatever an earlier test activated."""
    with translation.override("ja"):
        yield


@pytest.fixture
def people(ministries: Any) -> dict[str, Any]:
    a, b = ministries
    return {
        "a": make_user("officer-a", a, ["staff", "procurement_officer"]),
        "b": make_user("officer-b", b, ["staff", "procurement_officer"]),
        "admin": make_user("platform-admin", a, ["platform_admin"]),
        "staff": make_user("staff-user", a, ["staff"]),
        "auditor": make_user("auditor-user", a, ["auditor"]),
    }


def raise_deployment(people: dict[str, Any], level: int = 3) -> tuple[Deployment, ChangeRequest]:
    deployment = make_deployment("d1", clearance=1)
    services.deployment_save(actor=people["a"], deployment=deployment, clearance=level, reason="国産・閉域")
    deployment.refresh_from_db()
    return deployment, ChangeRequest.objects.get(deployment=deployment, status="pending")


def test_a_raise_is_proposed_not_applied(people: dict[str, Any]) -> None:
    deployment, change = raise_deployment(people)
    destination = services.destination_of(deployment)  # what the approver approves it for
    assert deployment.clearance == 1 and change.payload == {"from": 1, "to": 3, "destination": destination}
    assert change.proposed_by == people["a"] and change.kind == "deployment_clearance"
    event = AuditEvent.objects.get(action="registry.change.propose")
    assert event.actor == people["a"] and event.data["payload"] == change.payload


def test_reason_is_required_and_lowering_is_direct(people: dict[str, Any]) -> None:
    deployment = make_deployment("d1", clearance=1)
    with pytest.raises(ValidationError) as missing:
        services.deployment_save(actor=people["a"], deployment=deployment, clearance=2)
    assert "reason" in missing.value.message_dict
    services.deployment_save(actor=None, deployment=deployment, clearance=3)  # system: direct
    services.deployment_save(actor=people["a"], deployment=deployment, clearance=2)  # lowering: direct
    deployment.refresh_from_db()
    assert deployment.clearance == 2 and not ChangeRequest.objects.exists()


def test_proposer_cannot_approve_own(people: dict[str, Any]) -> None:
    deployment, change = raise_deployment(people)
    with pytest.raises(PermissionDenied):
        approvals.change_request_approve(actor=people["a"], change_request=change)
    deployment.refresh_from_db()
    assert deployment.clearance == 1
    change.refresh_from_db()
    assert change.status == "pending"


@pytest.mark.parametrize("role", ["staff", "auditor"])
def test_roles_without_edit_rights_cannot_decide(role: str, people: dict[str, Any]) -> None:
    deployment, change = raise_deployment(people)
    with pytest.raises(PermissionDenied):
        approvals.change_request_approve(actor=people[role], change_request=change)
    with pytest.raises(PermissionDenied):
        approvals.change_request_reject(actor=people[role], change_request=change)
    deployment.refresh_from_db()
    assert deployment.clearance == 1


@pytest.mark.parametrize("approver", ["b", "admin"])
def test_another_officer_or_platform_admin_approves_and_it_applies(
    approver: str, people: dict[str, Any]
) -> None:
    deployment, change = raise_deployment(people)
    approvals.change_request_approve(actor=people[approver], change_request=change, note="確認済み")
    deployment.refresh_from_db()
    change.refresh_from_db()
    assert deployment.clearance == 3
    assert (change.status, change.decided_by, change.decision_note) == (
        "applied",
        people[approver],
        "確認済み",
    )
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "actor_id"))
    assert ("registry.change.approve", people[approver].pk) in actions
    assert ("registry.deployment.update", people[approver].pk) in actions
    assert audit_verify_chain() == (True, None)
    with pytest.raises(ValidationError):  # decided once only
        approvals.change_request_approve(actor=people[approver], change_request=change)


def test_reject_applies_nothing(people: dict[str, Any]) -> None:
    deployment, change = raise_deployment(people)
    approvals.change_request_reject(actor=people["b"], change_request=change, note="根拠不足")
    deployment.refresh_from_db()
    change.refresh_from_db()
    assert deployment.clearance == 1 and change.status == "rejected"
    assert AuditEvent.objects.filter(action="registry.change.reject", actor=people["b"]).exists()
    # The target is free again for a new proposal.
    services.deployment_save(actor=people["a"], deployment=deployment, clearance=2, reason="再提案")
    assert ChangeRequest.objects.filter(deployment=deployment, status="pending").count() == 1


def test_one_pending_request_per_target_and_stale_requests_refused(people: dict[str, Any]) -> None:
    deployment, change = raise_deployment(people)
    with pytest.raises(ValidationError, match="承認待ち"):
        services.deployment_save(actor=people["b"], deployment=deployment, clearance=2, reason="別案")
    services.deployment_save(actor=None, deployment=deployment, clearance=2)  # changed meanwhile
    with pytest.raises(ValidationError, match="提案後に対象が変更"):
        approvals.change_request_approve(actor=people["b"], change_request=change)
    deployment.refresh_from_db()
    assert deployment.clearance == 2


def test_database_refuses_self_approval(people: dict[str, Any]) -> None:
    _deployment, change = raise_deployment(people)
    with pytest.raises(IntegrityError), transaction.atomic():
        ChangeRequest.objects.filter(pk=change.pk).update(status="applied", decided_by=people["a"])


def test_model_clearance_raise_and_new_entries(people: dict[str, Any]) -> None:
    vendor = services.vendor_save(actor=people["a"], name="Vendor")
    model = services.model_save(
        actor=people["a"],
        reason="国産モデル",
        vendor=vendor,
        name="m",
        family="F",
        version="1",
        license="Apache-2.0",
        context_window=4096,
        clearance=3,
    )
    assert model.clearance == 1  # a new entry starts at 機密性1
    change = ChangeRequest.objects.get(model=model)
    approvals.change_request_approve(actor=people["admin"], change_request=change)
    model.refresh_from_db()
    assert model.clearance == 3


def test_offprem_route_needs_approval(people: dict[str, Any], ministries: Any) -> None:
    a, _b = ministries
    onprem = make_deployment("onprem")
    cloud = make_deployment("cloud", clearance=1)
    services.deployment_save(actor=None, deployment=cloud, zone="external")
    alias = make_alias([(onprem, 100)], grant=[a])
    # On-prem canary: direct.
    other = make_deployment("onprem2")
    result = services.alias_set_routes(
        actor=people["a"], alias=alias, routes=[(onprem, 90), (other, 10)], reason="canary"
    )
    assert not isinstance(result, ChangeRequest)
    # Off-prem: proposed only; the router still sends nothing there.
    change = services.alias_set_routes(
        actor=people["a"], alias=alias, routes=[(onprem, 50), (cloud, 50)], reason="クラウド併用"
    )
    assert isinstance(change, ChangeRequest) and change.payload["offprem"] == ["cloud"]
    assert chosen(a) == {"onprem", "onprem2"}
    approvals.change_request_approve(actor=people["b"], change_request=change)
    from apps.registry.snapshot import reset_for_tests

    reset_for_tests()
    assert chosen(a) == {"onprem", "cloud"}
    alias.refresh_from_db()
    assert alias.current_revision is not None and alias.current_revision.created_by == people["a"]
    # Already routed: a weight change needs no new approval.
    result = services.alias_set_routes(
        actor=people["a"], alias=alias, routes=[(onprem, 20), (cloud, 80)], reason="比率変更"
    )
    assert not isinstance(result, ChangeRequest)


def test_external_zone_is_level_1_and_routed_deployments_stay_on_prem(
    people: dict[str, Any], ministries: Any
) -> None:
    a, _b = ministries
    deployment = make_deployment("d1", clearance=1)
    with pytest.raises(ValidationError) as refused:
        services.deployment_save(actor=None, deployment=deployment, zone="external", clearance=2)
    assert "clearance" in refused.value.message_dict
    make_alias([(deployment, 100)], grant=[a])
    with pytest.raises(ValidationError) as moved:
        services.deployment_save(actor=people["a"], deployment=deployment, zone="external")
    assert "zone" in moved.value.message_dict


# --- Screens -------------------------------------------------------------------------------------


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_screens_approve_and_reject(people: dict[str, Any]) -> None:
    deployment, change = raise_deployment(people)
    proposer, other = login(people["a"]), login(people["b"])
    page = proposer.get(reverse("registry:change_list")).content.decode()
    assert f'data-testid="change-{change.pk}"' in page and 'data-testid="own-request"' in page
    assert f'data-testid="change-approve-{change.pk}"' not in page  # no button for the proposer
    assert proposer.post(reverse("registry:change_approve", args=[change.pk])).status_code == 403
    assert (
        login(people["staff"]).post(reverse("registry:change_approve", args=[change.pk])).status_code == 403
    )
    edit = other.get(reverse("registry:deployment_edit", args=[deployment.pk])).content.decode()
    assert 'data-testid="pending-change-banner"' in edit
    listing = other.get(reverse("registry:deployment_list")).content.decode()
    assert 'data-testid="pending-badge"' in listing and 'data-testid="pending-change-count"' in listing
    response = other.post(
        reverse("registry:change_approve", args=[change.pk]), {"note": "OK"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and 'data-status="applied"' in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.clearance == 3
    again = other.post(reverse("registry:change_reject", args=[change.pk]), HTTP_HX_REQUEST="true")
    assert 'data-testid="change-notice"' in again.content.decode()  # already decided: said in the row


def test_screens_reject_without_htmx(people: dict[str, Any]) -> None:
    deployment, change = raise_deployment(people)
    response = login(people["b"]).post(reverse("registry:change_reject", args=[change.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("registry:change_list")
    change.refresh_from_db()
    deployment.refresh_from_db()
    assert change.status == "rejected" and deployment.clearance == 1


def test_edit_form_proposes_a_raise(people: dict[str, Any]) -> None:
    deployment = make_deployment("d1", clearance=1)
    form = {
        "model": deployment.model_id,
        "name": deployment.name,
        "provider": deployment.provider,
        "base_url": deployment.base_url,
        "served_model_name": deployment.served_model_name,
        "secret_ref": "",
        "zone": "on_prem",
        "clearance": "3",
        "max_concurrency": str(deployment.max_concurrency),
        "enabled": "on",
        "reason": "閉域へ移設",
    }
    client = login(people["a"])
    response = client.post(reverse("registry:deployment_edit", args=[deployment.pk]), form)
    assert response.status_code == 302, response.content.decode()
    deployment.refresh_from_db()
    assert deployment.clearance == 1
    assert ChangeRequest.objects.get(deployment=deployment).payload == {
        "from": 1,
        "to": 3,
        "destination": services.destination_of(deployment),
    }
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="pending-badge"' in page
