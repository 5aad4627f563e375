"""What lands on the audit chain besides service writes: sign-ins and sign-outs (also the
IdP's back-channel logout), membership and role changes from claims, reads of documents,
and API keys used after their end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import OIDCSession
from apps.accounts.services import sessions_end_for_logout_token, user_sync_from_claims
from apps.accounts.session_store import SessionStore
from apps.audit import events
from apps.audit.models import AuditEvent
from apps.audit.services import audit_verify
from apps.gateway import keys
from apps.gateway.models import ApiKey
from apps.gateway.services import api_key_create
from apps.tenancy.models import Membership
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user


def _actions(**filters: Any) -> list[tuple[str, int | None]]:
    return list(AuditEvent.objects.filter(**filters).order_by("id").values_list("action", "ministry_id"))


def test_login_and_logout_are_recorded_once_per_ministry_of_the_user(ministries: Any) -> None:
    a, b = ministries
    user = make_user("two-hats", a, ["staff"])
    Membership.objects.create(user=user, ministry=b, roles=["staff"])
    client = Client()
    client.force_login(user)
    assert _actions(actor=user, action=events.LOGIN) == [(events.LOGIN, a.pk), (events.LOGIN, b.pk)]
    assert client.post(reverse("accounts:logout")).status_code == 302
    logouts = AuditEvent.objects.filter(actor=user, action=events.LOGOUT)
    assert sorted(logouts.values_list("ministry_id", flat=True)) == [a.pk, b.pk]
    assert {e.data["via"] for e in logouts} == {"user"}
    assert audit_verify().intact


def test_backchannel_logout_is_recorded(staff_a: Any) -> None:
    session = SessionStore()
    session.create()
    OIDCSession.objects.create(user=staff_a.user, sid="idp-sid-1", session_key=session.session_key)
    assert sessions_end_for_logout_token(subject=None, sid="idp-sid-1") == 1
    event = AuditEvent.objects.get(action=events.LOGOUT, target_id=str(staff_a.user.pk))
    assert event.ministry_id == staff_a.ministry.pk and event.actor_id is None
    assert event.data["via"] == "backchannel" and event.data["sid"] == "idp-sid-1"


def _claims(groups: list[str]) -> dict[str, Any]:
    return {"sub": "sub-audit-roles", "preferred_username": "suzuki", "groups": groups}


def test_membership_grants_role_changes_and_removals_are_recorded(ministries: Any) -> None:
    a, _b = ministries
    user = user_sync_from_claims(claims=_claims(["/ministries/digital"]))
    user_sync_from_claims(claims=_claims(["/ministries/digital"]), user=user)  # unchanged: no event
    user_sync_from_claims(claims=_claims(["/ministries/digital", "/ministries/digital/admins"]), user=user)
    user_sync_from_claims(claims=_claims([]), user=user)
    rows = list(
        AuditEvent.objects.filter(target_type="membership", data__user_id=user.pk)
        .order_by("id")
        .values_list("action", "ministry_id", "data")
    )
    assert [(action, m) for action, m, _ in rows] == [
        (events.MEMBERSHIP_CREATE, a.pk),
        (events.MEMBERSHIP_ROLES_CHANGE, a.pk),
        (events.MEMBERSHIP_REMOVE, a.pk),
    ]
    assert rows[1][2]["roles_before"] == ["staff"]
    assert rows[1][2]["roles_after"] == ["ministry_admin", "staff"]
    assert rows[2][2]["roles_after"] == []


@pytest.mark.parametrize("state", ["expired", "revoked"])
def test_a_real_key_used_after_its_end_is_recorded_once_per_window(ministries: Any, state: str) -> None:
    a, _b = ministries
    admin = make_user("admin-keys", a, ["ministry_admin"])
    key, plaintext = api_key_create(
        actor=admin, ministry=a, name="x", expires_at=timezone.now() + timedelta(days=1)
    )
    if state == "expired":
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    keys.reset_for_tests()
    events.reset_for_tests()
    for _ in range(3):
        response = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        assert response.status_code == 401
    refused = AuditEvent.objects.filter(action=events.API_KEY_REFUSED, target_id=str(key.pk))
    assert refused.count() == 1, "a retry loop must not flood the chain"
    assert refused[0].ministry_id == a.pk and refused[0].data == {
        "state": state,
        "prefix": key.display_prefix,
    }
    # A wrong secret behind the same prefix is not the key: nothing is recorded for it.
    events.reset_for_tests()
    forged = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
    assert Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {forged}").status_code == 401
    assert refused.count() == 1


def test_document_download_and_passage_view_are_recorded(staff_a: Any) -> None:
    from apps.documents.models import Chunk
    from apps.documents.tests.factories import ready_document_of_staff_a

    with ministry_scope(ministry_id=staff_a.ministry.pk):
        document = ready_document_of_staff_a(staff_a.ministry)
        chunk = Chunk.objects.create(
            document=document,
            workspace_id=document.workspace_id,
            ordinal=0,
            text="本文",
            char_start=0,
            char_end=2,
            token_count=1,
        )
    client = Client()
    client.force_login(staff_a.user)
    download = client.get(reverse("documents:download", args=[document.pk]))
    assert download.status_code == 200
    passage = client.get(reverse("documents:passage", args=[document.pk, chunk.pk]))
    assert passage.status_code == 200
    rows = _actions(actor=staff_a.user, target_type="document", target_id=str(document.pk))
    assert rows == [
        (events.DOCUMENT_DOWNLOAD, staff_a.ministry.pk),
        (events.DOCUMENT_PASSAGE_VIEW, staff_a.ministry.pk),
    ]


def test_document_read_refused_to_an_outsider_is_not_recorded_as_access(staff_a: Any, staff_b: Any) -> None:
    from apps.documents.tests.factories import ready_document_of_staff_a

    with ministry_scope(ministry_id=staff_a.ministry.pk):
        document = ready_document_of_staff_a(staff_a.ministry)
    client = Client()
    client.force_login(staff_b.user)
    assert client.get(reverse("documents:download", args=[document.pk])).status_code == 404
    assert not AuditEvent.objects.filter(action=events.DOCUMENT_DOWNLOAD).exists()
