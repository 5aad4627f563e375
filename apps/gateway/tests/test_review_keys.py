"""Attacks on API keys found in review (key creation): each test failed before its fix."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.gateway.models import ApiKey
from apps.gateway.services import api_key_create
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user


def _soon() -> Any:
    return timezone.now() + timedelta(days=5)


def _locally_granted_admin(ministry: Any, grantor: Any, username: str) -> Any:
    from apps.accounts.models import LocalGrantPolicy, LocalRoleGrant

    user = make_user(username, ministry, ["staff"])
    with ministry_scope(ministry_id=ministry.pk):
        LocalGrantPolicy.objects.create(ministry=ministry, enabled=True, allow_ministry_admin=True)
        LocalRoleGrant.objects.create(
            ministry=ministry,
            user=user,
            role="ministry_admin",
            expires_at=timezone.now() + timedelta(days=7),
            granted_by=grantor,
        )
    return user


def test_a_key_needs_an_sso_admin_of_its_ministry_as_creator(ministries: tuple[Any, Any]) -> None:
    """The service issued a key to any actor (the views' role check was the only one), and a key
    whose creator is not an SSO admin of its ministry is refused as revoked on first use."""
    a, b = ministries
    staff_a = make_user("rk-staff-a", a, ["staff"])
    auditor_a = make_user("rk-auditor-a", a, ["staff", "ministry_auditor"])
    admin_b = make_user("rk-admin-b", b, ["staff", "ministry_admin"])
    for actor in (staff_a, auditor_a, admin_b):
        with pytest.raises(ValidationError):
            api_key_create(actor=actor, ministry=a, name="x", expires_at=_soon())
    assert not ApiKey.objects.filter(ministry=a).exists()
    assert not AuditEvent.objects.filter(action="gateway.api_key.create").exists()


def test_a_deactivated_admin_cannot_issue_a_key(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    admin = make_user("rk-admin-off", a, ["staff", "ministry_admin"])
    admin.is_active = False
    admin.save()
    with pytest.raises(ValidationError):
        api_key_create(actor=admin, ministry=a, name="x", expires_at=_soon())


def test_a_locally_granted_admin_gets_an_explanation_not_a_dead_key(ministries: tuple[Any, Any]) -> None:
    """The key page (effective roles) let a locally granted admin create a key and showed its
    plaintext, but the key check (SSO roles, the rule keys live by) refused it on every call."""
    a, _ = ministries
    sso_admin = make_user("rk-sso-admin", a, ["staff", "ministry_admin"])
    local_admin = _locally_granted_admin(a, sso_admin, "rk-local-admin")
    client = Client()
    client.force_login(local_admin)
    assert client.get("/gateway/keys/").status_code == 200  # the page is theirs to read
    response = client.post(
        "/gateway/keys/",
        {"name": "dead", "max_level": "1", "expires_at": _soon().strftime("%Y-%m-%dT%H:%M")},
    )
    assert response.status_code == 400
    assert "IdP" in response.content.decode()
    assert not ApiKey.objects.filter(ministry=a).exists()


def test_an_sso_admin_still_issues_keys_that_work(ministries: tuple[Any, Any]) -> None:
    from apps.gateway import keys

    a, _ = ministries
    admin = make_user("rk-admin-ok", a, ["staff", "ministry_admin"])
    key, plaintext = api_key_create(actor=admin, ministry=a, name="ok", expires_at=_soon())
    keys.reset_for_tests()
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.VALID
    assert key.created_by == admin


def test_the_refusal_is_translated(ministries: tuple[Any, Any]) -> None:
    from django.utils import translation

    a, _ = ministries
    staff = make_user("rk-staff-en", a, ["staff"])
    with translation.override("en"), pytest.raises(ValidationError) as refused:
        api_key_create(actor=staff, ministry=a, name="x", expires_at=_soon())
    assert "administrator role from the identity provider" in refused.value.messages[0]


@pytest.mark.django_db(transaction=True)
def test_the_key_cap_holds_when_two_admins_create_keys_at_once(
    ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both creations counted the live keys before either inserted, so the cap could be passed."""
    import threading

    from django.db import connections

    from apps.gateway import keys, services

    a, _ = ministries
    admins = [make_user(f"cap-admin-{n}", a, ["ministry_admin"]) for n in (1, 2)]
    monkeypatch.setattr(services, "MAX_KEYS_PER_MINISTRY", 1)
    barrier = threading.Barrier(2)
    generate = keys.generate_key

    def meeting_generate() -> tuple[str, str]:
        try:
            barrier.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass
        return generate()

    monkeypatch.setattr(keys, "generate_key", meeting_generate)
    results: list[Any] = [None, None]

    def run(index: int) -> None:
        try:
            api_key_create(actor=admins[index], ministry=a, name=f"k{index}", expires_at=_soon())
        except BaseException as exc:  # noqa: BLE001  (reported to the test)
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "ValidationError"]
    assert ApiKey.objects.filter(ministry=a, revoked_at__isnull=True).count() == 1
