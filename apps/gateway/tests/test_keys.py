"""API keys: hashing, services, audit, management command, console page, management API, schema."""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client

from apps.audit.models import AuditEvent
from apps.gateway import keys
from apps.gateway.models import ApiKey
from apps.gateway.services import api_key_create, api_key_revoke
from tests.support.fixtures import make_user


@pytest.fixture
def admin_a(ministries: tuple[Any, Any]) -> Any:
    return make_user("admin-a", ministries[0], ["staff", "ministry_admin"])


@pytest.fixture
def admin_b(ministries: tuple[Any, Any]) -> Any:
    return make_user("admin-b", ministries[1], ["ministry_admin"])


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_key_is_stored_only_as_hash_and_audited(ministries: tuple[Any, Any], admin_a: Any) -> None:
    key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="人事システム", max_level=2)
    assert re.fullmatch(r"gn-[A-Za-z0-9_-]{43}", plaintext)
    assert key.prefix == plaintext[3:11]
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    stored = ApiKey.objects.filter(pk=key.pk).values()[0]
    assert plaintext not in {str(v) for v in stored.values()}
    event = AuditEvent.objects.get(action="gateway.api_key.create")
    assert event.ministry_id == ministries[0].pk and event.actor_id == admin_a.pk
    assert plaintext not in str(event.data) and event.data["prefix"] == key.display_prefix

    info = keys.lookup_key(plaintext)
    assert keys.check_key(info, plaintext) == keys.KeyState.VALID
    assert (
        keys.check_key(info, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) == keys.KeyState.INVALID
    )
    assert keys.check_key(keys.lookup_key("gn-XXXXXXXXsecret"), "gn-XXXXXXXXsecret") == keys.KeyState.INVALID


def test_revoke_is_audited_idempotent_and_invalidates_cache(
    ministries: tuple[Any, Any], admin_a: Any, django_capture_on_commit_callbacks: Any
) -> None:
    key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="x")
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.VALID
    assert keys.cached_key(plaintext) is not None
    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(actor=admin_a, key=key)
    assert keys.cached_key(plaintext) is None
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.REVOKED
    api_key_revoke(actor=admin_a, key=key)
    assert AuditEvent.objects.filter(action="gateway.api_key.revoke").count() == 1


def test_create_validates(ministries: tuple[Any, Any]) -> None:
    with pytest.raises(ValidationError):
        api_key_create(actor=None, ministry=ministries[0], name=" ")
    with pytest.raises(ValidationError):
        api_key_create(actor=None, ministry=ministries[0], name="x", max_level=4)
    with pytest.raises(ValidationError):
        api_key_create(actor=None, ministry=ministries[0], name="x", aliases=["no-such-alias"])


def test_management_command_prints_key_once(ministries: tuple[Any, Any]) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "api_key_create",
        "--ministry",
        "digital",
        "--name",
        "batch",
        "--max-level",
        "2",
        stdout=out,
        stderr=err,
    )
    plaintext = out.getvalue().strip()
    key = ApiKey.objects.get(name="batch")
    assert key.ministry == ministries[0] and key.max_level == 2
    assert keys.hash_key(plaintext) == key.key_hash
    assert "shown only now" in err.getvalue()


def test_console_page_create_list_revoke(ministries: tuple[Any, Any], admin_a: Any, admin_b: Any) -> None:
    client = logged_in(admin_a)
    page = client.get("/gateway/keys/")
    assert page.status_code == 200
    created = client.post("/gateway/keys/", {"name": "統計システム", "max_level": "1"})
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    plaintext = re.search(rb'data-testid="new-key-value">(gn-[^<]+)<', created.content).group(1).decode()  # type: ignore[union-attr]
    key = ApiKey.objects.get(name="統計システム")
    assert keys.hash_key(plaintext) == key.key_hash and key.created_by == admin_a
    listing = client.get("/gateway/keys/").content.decode()
    assert key.display_prefix in listing and plaintext not in listing
    # Another ministry's admin cannot revoke it (404, like a missing key).
    assert logged_in(admin_b).post(f"/gateway/keys/{key.pk}/revoke/").status_code == 404
    assert client.post(f"/gateway/keys/{key.pk}/revoke/").status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert "統計システム" not in logged_in(admin_b).get("/gateway/keys/").content.decode()


def test_console_page_needs_ministry_admin(ministries: tuple[Any, Any]) -> None:
    staff = make_user("staff-only", ministries[0], ["staff"])
    assert logged_in(staff).get("/gateway/keys/").status_code == 403
    assert Client().get("/gateway/keys/").status_code == 302


def test_management_api(ministries: tuple[Any, Any], admin_a: Any, admin_b: Any) -> None:
    client = logged_in(admin_a)
    response = client.post(
        "/gateway/api/keys/", {"name": "api", "max_level": 2}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["key"].startswith("gn-") and body["max_level"] == 2 and body["active"] is True
    listed = client.get("/gateway/api/keys/").json()
    assert [k["id"] for k in listed["results"]] == [body["id"]] and "key" not in listed["results"][0]
    assert logged_in(admin_b).get("/gateway/api/keys/").json()["results"] == []
    assert logged_in(admin_b).post(f"/gateway/api/keys/{body['id']}/revoke/").status_code == 404
    revoked = client.post(f"/gateway/api/keys/{body['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    staff = make_user("staff-api", ministries[0], ["staff"])
    assert logged_in(staff).get("/gateway/api/keys/").status_code == 403
    assert client.post("/gateway/api/keys/", {"name": ""}, content_type="application/json").status_code == 400


def test_openapi_schema_documents_key_api(db: None) -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert "/gateway/api/keys/" in schema["paths"]
    assert "/gateway/api/keys/{key_id}/revoke/" in schema["paths"]
    assert "key" in schema["components"]["schemas"]["ApiKeyCreated"]["properties"]


def test_session_access_to_v1(ministries: tuple[Any, Any], admin_a: Any) -> None:
    """Staff's browser session may call /v1 too; writes need CSRF like any session request."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_a)
    models = client.get("/v1/models")
    assert models.status_code == 200 and models.json()["object"] == "list"
    refused = client.post(
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "x"}]},
        content_type="application/json",
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    client.get("/gateway/keys/")  # sets the CSRF cookie
    token = client.cookies["gennai_csrftoken"].value
    not_found = client.post(
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "x"}]},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert not_found.status_code == 404 and not_found.json()["error"]["code"] == "model_not_found"
