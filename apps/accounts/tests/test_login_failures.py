"""Failed sign-ins are on the audit chain, with a reason and no secrets, and cannot flood it."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
import requests
from django.test import Client
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from apps.accounts import oidc
from apps.audit.login_failures import LOGIN_FAILED
from apps.audit.models import AuditEvent
from tests.support.fixtures import make_user

pytestmark = pytest.mark.django_db
_addresses = itertools.count(1)
SECRET_CODE = "secret-authorization-code-xyz"


@pytest.fixture
def client() -> Client:
    """A browser from its own address (the coalescing window is per address)."""
    return Client(REMOTE_ADDR=f"198.51.100.{next(_addresses)}")


def start_login(client: Client, state: str = "good-state", nonce: str = "the-nonce") -> None:
    session = client.session
    session["oidc_states"] = {state: {"nonce": nonce, "code_verifier": "verifier", "added_on": 0}}
    session.save()


def failures() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=LOGIN_FAILED).order_by("id"))


def assert_no_secrets(event: AuditEvent) -> None:
    text = str(event.data)
    for secret in (SECRET_CODE, "good-state", "forged-state", "the-nonce", "verifier", "id.token.sig"):
        assert secret not in text, f"{secret} leaked into the audit event"


def test_idp_error_is_recorded_with_its_code(client: Client) -> None:
    response = client.get("/accounts/callback/", {"error": "access_denied", "state": "x"})
    assert response.status_code == 302
    [event] = failures()
    assert event.data["reason"] == "idp_error" and event.data["idp_error"] == "access_denied"
    assert event.data["ip"] == client.defaults["REMOTE_ADDR"]
    assert event.actor_id is None and event.ministry_id is None


def test_odd_idp_error_text_is_not_stored(client: Client) -> None:
    client.get("/accounts/callback/", {"error": "<script>alert(1)</script>"})
    assert failures()[0].data["idp_error"] == "other"


def test_state_mismatch_is_refused_and_recorded(client: Client) -> None:
    start_login(client)
    response = client.get("/accounts/callback/", {"code": SECRET_CODE, "state": "forged-state"})
    assert response.status_code == 400
    [event] = failures()
    assert event.data["reason"] == "state_mismatch"
    assert_no_secrets(event)


def test_callback_without_a_login_in_progress(client: Client) -> None:
    client.get("/accounts/callback/", {"code": SECRET_CODE, "state": "good-state"})
    assert failures()[0].data["reason"] == "no_state"
    client2 = Client(REMOTE_ADDR="198.51.100.250")
    client2.get("/accounts/callback/", {"state": "good-state"})
    assert failures()[1].data["reason"] == "incomplete_callback"


def _tokens(monkeypatch: pytest.MonkeyPatch, claims: dict[str, Any]) -> None:
    monkeypatch.setattr(
        OIDCAuthenticationBackend,
        "get_token",
        lambda self, payload: {"id_token": "id.token.sig", "access_token": "a", "refresh_token": "r"},
    )
    monkeypatch.setattr(oidc, "decode_provider_token", lambda token, **kw: dict(claims))


def test_nonce_mismatch_is_refused_and_recorded(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    _tokens(monkeypatch, {"sub": "someone", "nonce": "another-nonce"})
    start_login(client)
    response = client.get("/accounts/callback/", {"code": SECRET_CODE, "state": "good-state"})
    assert response.status_code == 400
    [event] = failures()
    assert event.data["reason"] == "nonce_mismatch"
    assert_no_secrets(event)


def test_token_endpoint_refusal_is_recorded(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = requests.Response()
    refused.status_code = 400

    def refuse(self: Any, payload: Any) -> Any:
        raise requests.HTTPError(response=refused)

    monkeypatch.setattr(OIDCAuthenticationBackend, "get_token", refuse)
    start_login(client)
    assert client.get("/accounts/callback/", {"code": SECRET_CODE, "state": "good-state"}).status_code == 302
    [event] = failures()
    assert event.data["reason"] == "token_error"
    assert_no_secrets(event)


def test_disabled_user_is_recorded_in_their_ministries(
    client: Client, monkeypatch: pytest.MonkeyPatch, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    user = make_user("disabled-one", a, ["staff"])
    user.is_active = False
    user.save()
    _tokens(monkeypatch, {"sub": user.subject, "nonce": "the-nonce", "groups": ["/ministries/digital"]})
    start_login(client)
    response = client.get("/accounts/callback/", {"code": SECRET_CODE, "state": "good-state"})
    assert response.status_code == 302 and "_auth_user_id" not in client.session
    [event] = failures()
    assert (event.data["reason"], event.ministry_id, event.target_id) == ("user_disabled", a.pk, str(user.pk))
    assert_no_secrets(event)


class Clock:
    """The coalescing window's clock, moved on by the test (minutes no other test uses)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from apps.audit import login_failures

    fake = Clock(time.time() + 86_400 * next(_addresses))
    monkeypatch.setattr(login_failures, "time", fake)
    return fake


def test_a_flood_from_one_address_is_coalesced(client: Client, clock: Clock) -> None:
    for _ in range(50):
        client.get("/accounts/callback/", {"error": "access_denied"})
    assert len(failures()) == 1, "one event per address and minute"
    clock.now += 60  # the next minute's first failure carries the count of those not written
    client.get("/accounts/callback/", {"error": "access_denied"})
    assert [e.data.get("coalesced_before") for e in failures()] == [None, 49]


def test_many_addresses_are_capped_per_minute(settings: Any, clock: Clock) -> None:
    settings.GENNAI_AUDIT_LOGIN_FAILURES_PER_MINUTE = 5
    for n in range(20):
        Client(REMOTE_ADDR=f"203.0.113.{n}").get("/accounts/callback/", {"error": "access_denied"})
    assert len(failures()) == 5
    clock.now += 60
    Client(REMOTE_ADDR="203.0.113.7").get("/accounts/callback/", {"error": "access_denied"})
    assert failures()[-1].data["coalesced_before"] == 1, "the address's capped failure is counted"
