"""API keys limited to workspaces for ``/v1/search`` (issue 7): strict when set, checked against the
key's own ministry at creation (service, console form, management API), audited, and a key without a
restriction keeps the ministry-wide rule it had before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.documents.models import Workspace
from apps.gateway.models import ApiKey
from apps.gateway.services import api_key_create
from apps.gateway.tests.test_v1_search import call
from apps.search import embeddings
from apps.search.tests.test_retriever import _indexed
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user

QUERY = "宿泊料の上限"


@pytest.fixture(autouse=True)
def _lexical(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]

    def unavailable(**_kwargs: Any) -> tuple[float, ...]:
        raise embeddings.EmbeddingUnavailable("no embedding alias in this test")

    monkeypatch.setattr(embeddings, "embed_query", unavailable)


@pytest.fixture
def corpus(ministries: tuple[Any, Any]) -> dict[str, Any]:
    """Two shared workspaces of A (W1, W2), one of B, one personal of A, one of A at 機密性3."""
    a, b = ministries
    owner_a, owner_b = make_user("ws-owner-a", a, ["staff"]), make_user("ws-owner-b", b, ["staff"])
    w1, c1 = _indexed(owner_a, a, name="出張規程", text="宿泊料の上限は一泊一万二千円とする。")
    w2, c2 = _indexed(owner_a, a, name="旅費細則", text="宿泊料の上限は一泊一万円とする。")
    personal, _ = _indexed(owner_a, a, name="個人メモ", text="宿泊料の上限についての個人メモ。")
    secret, _ = _indexed(owner_a, a, name="機密3", text="宿泊料の上限は内規で定める。")
    wb, _ = _indexed(owner_b, b, name="B省規程", text="宿泊料の上限は一泊九千円とする。")
    with ministry_scope(ministry_id=a.pk):
        Workspace.objects.filter(pk=personal.pk).update(kind="personal")
        Workspace.objects.filter(pk=secret.pk).update(level=3)
    return {
        "a": a,
        "b": b,
        "w1": w1,
        "c1": c1,
        "w2": w2,
        "c2": c2,
        "personal": personal,
        "secret": secret,
        "wb": wb,
    }


def _key(ministry: Any, workspace_ids: list[int] = [], actor: Any = None) -> tuple[ApiKey, str]:  # noqa: B006
    return api_key_create(
        actor=actor,
        ministry=ministry,
        name="検索システム",
        max_level=2,
        expires_at=timezone.now() + timedelta(days=30),
        workspace_ids=workspace_ids,
    )


def _chunk_ids(key: str, payload: dict[str, Any]) -> list[int]:
    status, body = call(key, payload)
    assert status == 200, body
    return sorted(r["chunk_id"] for r in body["data"])


def test_key_limited_to_w1_never_gets_w2_even_when_asking_for_it(corpus: dict[str, Any]) -> None:
    key, plaintext = _key(corpus["a"], [corpus["w1"].pk])
    assert key.allowed_workspace_ids == [corpus["w1"].pk]
    w1, w2 = corpus["w1"].pk, corpus["w2"].pk
    assert _chunk_ids(plaintext, {"query": QUERY, "top_k": 10}) == [corpus["c1"].pk]
    assert _chunk_ids(plaintext, {"query": QUERY, "workspace_ids": [w2]}) == []
    assert _chunk_ids(plaintext, {"query": QUERY, "workspace_ids": [w2, w1]}) == [corpus["c1"].pk]


def test_key_without_restriction_keeps_the_ministry_wide_rule(corpus: dict[str, Any]) -> None:
    _, plaintext = _key(corpus["a"])
    # Both shared workspaces of A up to the key's level; never personal, 機密性3 or B's.
    assert _chunk_ids(plaintext, {"query": QUERY, "top_k": 10}) == sorted([corpus["c1"].pk, corpus["c2"].pk])


def test_deleting_the_only_allowed_workspace_does_not_widen_the_key(corpus: dict[str, Any]) -> None:
    _, plaintext = _key(corpus["a"], [corpus["w1"].pk])
    with ministry_scope(ministry_id=corpus["a"].pk):
        Workspace.objects.filter(pk=corpus["w1"].pk).update(deleting=True)
    assert _chunk_ids(plaintext, {"query": QUERY, "top_k": 10}) == []


@pytest.mark.parametrize("which", ["wb", "personal", "secret", "missing"])
def test_service_refuses_workspaces_the_key_could_not_read(corpus: dict[str, Any], which: str) -> None:
    bad = 10**12 if which == "missing" else corpus[which].pk
    with pytest.raises(ValidationError):
        _key(corpus["a"], [corpus["w1"].pk, bad])
    assert not ApiKey.objects.exists()


def test_console_form_sets_and_audits_the_restriction(corpus: dict[str, Any]) -> None:
    admin = make_user("ws-admin-a", corpus["a"], ["staff", "ministry_admin"])
    client = Client()
    client.force_login(admin)
    page = client.get("/gateway/keys/").content.decode()
    # Offered: A's shared workspaces only.
    assert "出張規程" in page and "旅費細則" in page
    assert "B省規程" not in page and "個人メモ" not in page
    expiry = timezone.localtime(timezone.now() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    form = {"name": "統計", "max_level": "2", "expires_at": expiry}

    # Another ministry's workspace id (and a personal one) is a form error; nothing is stored.
    for crafted in (corpus["wb"].pk, corpus["personal"].pk):
        refused = client.post("/gateway/keys/", {**form, "workspaces": [corpus["w1"].pk, crafted]})
        assert refused.status_code == 400 and 'data-testid="new-key"' not in refused.content.decode()
    assert not ApiKey.objects.exists()

    created = client.post("/gateway/keys/", {**form, "workspaces": [corpus["w1"].pk]})
    assert created.status_code == 200, created.content
    key = ApiKey.objects.get(name="統計")
    assert key.allowed_workspace_ids == [corpus["w1"].pk]
    event = AuditEvent.objects.get(action="gateway.api_key.create", target_id=str(key.pk))
    assert event.data["workspace_ids"] == [corpus["w1"].pk] and event.actor_id == admin.pk
    row = created.content.decode().split('data-testid="key-workspaces">')[1].split("</td>")[0]
    assert row == "出張規程"


def test_management_api_sets_and_refuses_cross_ministry_workspaces(corpus: dict[str, Any]) -> None:
    admin = make_user("ws-api-admin-a", corpus["a"], ["staff", "ministry_admin"])
    client = Client()
    client.force_login(admin)
    body = {"name": "api", "max_level": 2, "expires_at": (timezone.now() + timedelta(days=30)).isoformat()}
    refused = client.post(
        "/gateway/api/keys/",
        {**body, "allowed_workspace_ids": [corpus["wb"].pk]},
        content_type="application/json",
    )
    assert refused.status_code == 400 and not ApiKey.objects.exists()
    created = client.post(
        "/gateway/api/keys/",
        {**body, "allowed_workspace_ids": [corpus["w2"].pk]},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["allowed_workspace_ids"] == [corpus["w2"].pk]
    listed = client.get("/gateway/api/keys/").json()["results"]
    assert listed[0]["allowed_workspace_ids"] == [corpus["w2"].pk]
    assert _chunk_ids(created.json()["key"], {"query": QUERY, "top_k": 10}) == [corpus["c2"].pk]
