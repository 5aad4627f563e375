"""API keys: hashing, services, audit, management command, console page, management API, schema,
and the rules of issue 6: mandatory, capped expiry; aliases checked against the ministry's grants
only; a key stops working when its creator stops being the ministry's admin; CSRF on management."""

from __future__ import annotations

import hashlib
import io
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.gateway import keys
from apps.gateway.models import ApiKey
from apps.gateway.services import api_key_create, api_key_revoke
from apps.tenancy.models import Membership
from apps.tenancy.versions import read_version
from tests.support.fixtures import make_user
from tests.support.registry import Upstream, register_alias


def soon(days: int = 30) -> Any:
    return timezone.now() + timedelta(days=days)


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
    key, plaintext = api_key_create(
        actor=admin_a, ministry=ministries[0], name="人事システム", max_level=2, expires_at=soon()
    )
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
    key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="x", expires_at=soon())
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
        api_key_create(actor=None, ministry=ministries[0], name=" ", expires_at=soon())
    with pytest.raises(ValidationError):
        api_key_create(actor=None, ministry=ministries[0], name="x", max_level=4, expires_at=soon())
    with pytest.raises(ValidationError):
        api_key_create(
            actor=None, ministry=ministries[0], name="x", aliases=["no-such-alias"], expires_at=soon()
        )


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
    # Every key expires: without --expires-days, after the maximum lifetime.
    assert timedelta(days=89) < key.expires_at - timezone.now() <= timedelta(days=90)
    assert key.platform_issued and key.created_by is None
    assert keys.hash_key(plaintext) == key.key_hash
    assert "shown only now" in err.getvalue()


def test_console_page_create_list_revoke(ministries: tuple[Any, Any], admin_a: Any, admin_b: Any) -> None:
    client = logged_in(admin_a)
    page = client.get("/gateway/keys/")
    assert page.status_code == 200
    assert "expires_at" in page.content.decode() and 'required value="20' in page.content.decode()
    expiry = timezone.localtime(soon()).strftime("%Y-%m-%dT%H:%M")
    created = client.post("/gateway/keys/", {"name": "統計システム", "max_level": "1", "expires_at": expiry})
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
        "/gateway/api/keys/",
        {"name": "api", "max_level": 2, "expires_at": soon().isoformat()},
        content_type="application/json",
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


# --- Expiry is mandatory and capped ------------------------------------------------------------


def test_expiry_is_mandatory_and_capped_in_the_service(ministries: tuple[Any, Any], settings: Any) -> None:
    for expires_at in (None, timezone.now() - timedelta(minutes=1), soon(91)):
        with pytest.raises(ValidationError):
            api_key_create(actor=None, ministry=ministries[0], name="x", expires_at=expires_at)
    key, _plaintext = api_key_create(actor=None, ministry=ministries[0], name="x", expires_at=soon(89))
    assert key.expires_at is not None
    settings.GENNAI_API_KEY_MAX_LIFETIME_DAYS = 7  # the cap is a setting
    with pytest.raises(ValidationError, match="7"):
        api_key_create(actor=None, ministry=ministries[0], name="y", expires_at=soon(8))
    assert not ApiKey.objects.filter(name="y").exists()


def test_expiry_is_mandatory_and_capped_in_the_console_form(
    ministries: tuple[Any, Any], admin_a: Any
) -> None:
    client = logged_in(admin_a)
    missing = client.post("/gateway/keys/", {"name": "no-expiry", "max_level": "1", "expires_at": ""})
    far = timezone.localtime(soon(120)).strftime("%Y-%m-%dT%H:%M")
    too_far = client.post("/gateway/keys/", {"name": "too-far", "max_level": "1", "expires_at": far})
    assert missing.status_code == 400 and too_far.status_code == 400
    assert "90" in too_far.content.decode()
    assert not ApiKey.objects.filter(name__in=["no-expiry", "too-far"]).exists()


def test_expiry_is_mandatory_and_capped_in_the_api(ministries: tuple[Any, Any], admin_a: Any) -> None:
    client = logged_in(admin_a)
    missing = client.post("/gateway/api/keys/", {"name": "a"}, content_type="application/json")
    null = client.post(
        "/gateway/api/keys/", {"name": "a", "expires_at": None}, content_type="application/json"
    )
    too_far = client.post(
        "/gateway/api/keys/",
        {"name": "a", "expires_at": soon(91).isoformat()},
        content_type="application/json",
    )
    assert [r.status_code for r in (missing, null, too_far)] == [400, 400, 400]
    assert "expires_at" in missing.json() and "90" in str(too_far.json())
    assert not ApiKey.objects.exists()


def test_expired_key_is_refused(ministries: tuple[Any, Any], admin_a: Any) -> None:
    key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="x", expires_at=soon())
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    keys.reset_for_tests()
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.EXPIRED
    response = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


# --- Aliases: the ministry's grants only -------------------------------------------------------


def test_alias_not_granted_looks_exactly_like_a_missing_one(
    ministries: tuple[Any, Any], admin_a: Any, admin_b: Any
) -> None:
    a_only = register_alias(
        upstreams=[Upstream(url="http://127.0.0.1:9/v1")], ministries=ministries[:1], name="a-secret"
    )
    ok, _ = api_key_create(
        actor=admin_a, ministry=ministries[0], name="a", aliases=["a-secret"], expires_at=soon()
    )
    assert ok.allowed_aliases == ["a-secret"]
    messages = []
    for name in ("a-secret", "zz-nothing"):  # B is not granted the first; the second does not exist
        with pytest.raises(ValidationError) as exc:
            api_key_create(actor=admin_b, ministry=ministries[1], name="b", aliases=[name], expires_at=soon())
        messages.append(exc.value.messages[0].replace(name, "NAME"))
    assert messages[0] == messages[1]
    # The same through the management API.
    client = logged_in(admin_b)
    bodies = []
    for name in ("a-secret", "zz-nothing"):
        response = client.post(
            "/gateway/api/keys/",
            {"name": "b", "allowed_aliases": [name], "expires_at": soon().isoformat()},
            content_type="application/json",
        )
        assert response.status_code == 400
        bodies.append(response.content.decode().replace(name, "NAME"))
    assert bodies[0] == bodies[1]
    assert a_only.alias.name not in logged_in(admin_b).get("/gateway/keys/").content.decode()


# --- The creator's role ------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["role_removed", "membership_deleted", "user_deactivated"])
def test_key_stops_working_when_its_creator_is_no_longer_admin(
    ministries: tuple[Any, Any], admin_a: Any, settings: Any, change: str
) -> None:
    settings.GENNAI_CACHE_CHECK_SECONDS = 0.05
    other_admin = make_user("admin-a2", ministries[0], ["ministry_admin"])
    key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="x", expires_at=soon())
    kept, kept_plaintext = api_key_create(
        actor=other_admin, ministry=ministries[0], name="kept", expires_at=soon()
    )
    platform, platform_plaintext = api_key_create(
        actor=None, ministry=ministries[0], name="ops", expires_at=soon()
    )
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.VALID
    version = read_version(keys.VERSION_NAME)

    membership = Membership.objects.get(user=admin_a, ministry=ministries[0])
    if change == "role_removed":
        membership.roles = ["staff"]
        membership.save()
    elif change == "membership_deleted":
        membership.delete()
    else:
        admin_a.is_active = False
        admin_a.save()

    assert read_version(keys.VERSION_NAME) != version  # every process is told, in this transaction
    key.refresh_from_db()
    assert key.revoked_at is not None and key.revoked_reason == "creator_not_admin"
    event = AuditEvent.objects.get(action="gateway.api_key.revoke_creator_not_admin")
    assert event.target_id == str(key.pk) and event.ministry_id == ministries[0].pk
    time.sleep(0.06)  # one check interval: what any other process waits at most
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.REVOKED
    # Other admins' keys and platform-issued keys are untouched.
    assert keys.check_key(keys.lookup_key(kept_plaintext), kept_plaintext) == keys.KeyState.VALID
    assert keys.check_key(keys.lookup_key(platform_plaintext), platform_plaintext) == keys.KeyState.VALID
    kept.refresh_from_db()
    platform.refresh_from_db()
    assert kept.revoked_at is None and platform.revoked_at is None


def test_admin_in_a_staff_in_b_keeps_a_keys_when_b_membership_changes(
    ministries: tuple[Any, Any], admin_a: Any
) -> None:
    Membership.objects.create(user=admin_a, ministry=ministries[1], roles=["staff"])
    key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="x", expires_at=soon())
    Membership.objects.filter(user=admin_a, ministry=ministries[1]).get().delete()
    key.refresh_from_db()
    assert key.revoked_at is None
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.VALID


def test_role_removal_that_bypasses_signals_is_caught_by_the_key_check(
    ministries: tuple[Any, Any], admin_a: Any, settings: Any
) -> None:
    """A role change by ``QuerySet.update()`` sends no signal: the key facts themselves carry
    the creator's role, so the refusal still comes, at the latest after the maximum age."""
    settings.GENNAI_CACHE_MAX_AGE_SECONDS = 0.1
    _key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="x", expires_at=soon())
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.VALID
    Membership.objects.filter(user=admin_a, ministry=ministries[0]).update(roles=["staff"])
    time.sleep(0.12)
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.REVOKED


def test_deactivated_ministry_key_is_refused_within_the_check_interval(
    ministries: tuple[Any, Any], admin_a: Any, settings: Any
) -> None:
    settings.GENNAI_CACHE_CHECK_SECONDS = 0.05
    _key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="x", expires_at=soon())
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.VALID
    ministry = ministries[0]
    ministry.active = False
    ministry.save()
    time.sleep(0.06)
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.INVALID
    response = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 401


# --- CSRF and no fallback from a key to the session --------------------------------------------


def test_key_management_needs_csrf_for_session_users(ministries: tuple[Any, Any], admin_a: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_a)
    body = {"name": "csrf", "expires_at": soon().isoformat()}
    refused = client.post("/gateway/api/keys/", body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.content.decode()
    assert not ApiKey.objects.exists()
    console_refused = client.post(
        "/gateway/keys/",
        {
            "name": "csrf",
            "max_level": "1",
            "expires_at": timezone.localtime(soon()).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert console_refused.status_code == 403 and not ApiKey.objects.exists()

    client.get("/gateway/keys/")  # sets the CSRF cookie
    token = client.cookies["gennai_csrftoken"].value
    created = client.post("/gateway/api/keys/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert created.status_code == 201
    key_id = created.json()["id"]
    assert client.post(f"/gateway/api/keys/{key_id}/revoke/").status_code == 403
    assert client.post(f"/gateway/keys/{key_id}/revoke/").status_code == 403
    assert ApiKey.objects.get(pk=key_id).revoked_at is None
    revoked = client.post(f"/gateway/api/keys/{key_id}/revoke/", HTTP_X_CSRFTOKEN=token)
    assert revoked.status_code == 200 and revoked.json()["active"] is False


def test_an_api_key_cannot_manage_keys(ministries: tuple[Any, Any], admin_a: Any) -> None:
    _key, plaintext = api_key_create(actor=admin_a, ministry=ministries[0], name="x", expires_at=soon())
    response = Client().post(
        "/gateway/api/keys/",
        {"name": "minted-by-key", "expires_at": soon().isoformat()},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {plaintext}",
    )
    assert response.status_code == 403 and not ApiKey.objects.filter(name="minted-by-key").exists()


@pytest.mark.parametrize("bad", ["gn-AAAAAAAAnot-a-real-key-at-all-000000000000000", "revoked", "garbage"])
def test_invalid_key_with_valid_session_is_refused_not_downgraded(
    ministries: tuple[Any, Any], admin_a: Any, bad: str
) -> None:
    """Through Django's URL stack (the lean ASGI front is covered in test_key_boundary_asgi)."""
    if bad == "revoked":
        key, bad = api_key_create(actor=admin_a, ministry=ministries[0], name="x", expires_at=soon())
        api_key_revoke(actor=admin_a, key=key)
        keys.reset_for_tests()
    client = logged_in(admin_a)
    assert client.get("/v1/models").status_code == 200  # the session alone works
    refused = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {bad}")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_console_shows_creator_and_why_a_key_was_revoked(ministries: tuple[Any, Any], admin_a: Any) -> None:
    other_admin = make_user("admin-a3", ministries[0], ["ministry_admin"])
    api_key_create(actor=admin_a, ministry=ministries[0], name="by-a", expires_at=soon())
    api_key_create(actor=None, ministry=ministries[0], name="by-ops", expires_at=soon())
    membership = Membership.objects.get(user=admin_a, ministry=ministries[0])
    membership.roles = ["staff"]
    membership.save()
    page = logged_in(other_admin).get("/gateway/keys/").content.decode()
    creators = re.findall(r'data-testid="key-creator">([^<]*)<', page)
    assert sorted(creators) == sorted(["admin-a", "プラットフォーム運用者"])
    assert page.count('data-testid="revoked-creator"') == 1
