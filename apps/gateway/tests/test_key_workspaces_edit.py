"""A key's /v1/search workspaces can be changed after creation (issue 7/8): by its ministry's admin
only, to that ministry's shared workspaces only, audited, and the next search obeys the new list."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from apps.audit.models import AuditEvent
from apps.gateway.models import ApiKey
from apps.gateway.services import api_key_revoke, api_key_set_workspaces
from apps.gateway.tests import test_key_workspaces as base
from apps.gateway.tests.test_key_workspaces import QUERY, _chunk_ids, _key
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user

# The shared corpus (two shared workspaces of A, one of B, a personal one, one at 機密性3).
corpus = base.corpus
_lexical = base._lexical


def _as(username: str, ministry: Any, roles: list[str]) -> Client:
    client = Client()
    client.force_login(make_user(username, ministry, roles))
    return client


def _allowed(key: ApiKey) -> list[int]:
    return list(ApiKey.objects.get(pk=key.pk).allowed_workspace_ids)


def test_admin_changes_the_workspaces_and_the_next_search_obeys(corpus: dict[str, Any]) -> None:
    a, w1, w2 = corpus["a"], corpus["w1"].pk, corpus["w2"].pk
    key, plaintext = _key(a, [w1])
    assert _chunk_ids(plaintext, {"query": QUERY, "top_k": 10}) == [corpus["c1"].pk]
    admin = _as("edit-admin-a", a, ["staff", "ministry_admin"])
    page = admin.get("/gateway/keys/").content.decode()
    assert f'action="/gateway/keys/{key.pk}/workspaces/"' in page

    response = admin.post(f"/gateway/keys/{key.pk}/workspaces/", {"workspaces": [w2]})

    assert response.status_code == 302
    assert _allowed(key) == [w2]
    assert _chunk_ids(plaintext, {"query": QUERY, "top_k": 10}) == [corpus["c2"].pk]
    event = AuditEvent.objects.filter(action="gateway.api_key.workspaces_change").get()
    assert (event.ministry_id, event.data["before"], event.data["after"]) == (a.pk, [w1], [w2])
    # Cleared: every shared workspace again (the ministry-wide rule).
    admin.post(f"/gateway/keys/{key.pk}/workspaces/", {})
    assert _allowed(key) == []
    assert _chunk_ids(plaintext, {"query": QUERY, "top_k": 10}) == sorted([corpus["c1"].pk, corpus["c2"].pk])


def test_other_ministry_staff_and_foreign_workspaces_change_nothing(corpus: dict[str, Any]) -> None:
    a, b = corpus["a"], corpus["b"]
    key, _plain = _key(a, [corpus["w1"].pk])
    url = f"/gateway/keys/{key.pk}/workspaces/"
    assert (
        _as("edit-admin-b", b, ["staff", "ministry_admin"]).post(url, {"workspaces": []}).status_code == 404
    )
    assert _as("edit-staff-a", a, ["staff"]).post(url, {"workspaces": []}).status_code == 403
    admin = _as("edit-admin-a2", a, ["staff", "ministry_admin"])
    for crafted in (corpus["wb"].pk, corpus["personal"].pk, corpus["secret"].pk):
        admin.post(url, {"workspaces": [crafted]})
        assert _allowed(key) == [corpus["w1"].pk], crafted
    assert not AuditEvent.objects.filter(action="gateway.api_key.workspaces_change").exists()


@pytest.mark.parametrize("which", ["wb", "personal", "secret"])
def test_service_refuses_what_the_key_could_not_read(corpus: dict[str, Any], which: str) -> None:
    key, _plain = _key(corpus["a"], [corpus["w1"].pk])
    with ministry_scope(ministry_id=corpus["a"].pk), pytest.raises(ValidationError):
        api_key_set_workspaces(actor=None, key=key, workspace_ids=[corpus[which].pk])
    assert _allowed(key) == [corpus["w1"].pk]


def test_a_revoked_key_is_not_edited(corpus: dict[str, Any]) -> None:
    key, _plain = _key(corpus["a"], [corpus["w1"].pk])
    with ministry_scope(ministry_id=corpus["a"].pk):
        api_key_revoke(actor=None, key=key)
        with pytest.raises(ValidationError):
            api_key_set_workspaces(actor=None, key=key, workspace_ids=[corpus["w2"].pk])
