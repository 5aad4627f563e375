"""Keys of creators demoted or disabled in the identity provider who never sign in again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from keycloak.exceptions import KeycloakGetError

from apps.audit.models import AuditEvent
from apps.gateway import keys, tasks
from apps.gateway.directory import KeycloakDirectory
from apps.gateway.services import api_key_create, api_keys_recheck_creators
from apps.tenancy.models import Membership
from apps.tenancy.versions import read_version
from tests.support.fixtures import make_user


def soon() -> Any:
    from django.utils import timezone

    return timezone.now() + timedelta(days=30)


class FakeDirectory:
    def __init__(self, answers: dict[str, frozenset[str] | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def admin_ministry_codes(self, subject: str) -> frozenset[str] | None:
        self.asked.append(subject)
        return self.answers.get(subject)


class FakeKeycloakAdmin:
    """The few ``KeycloakAdmin`` calls :class:`KeycloakDirectory` makes."""

    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = users

    def get_user(self, user_id: str) -> dict[str, Any]:
        if user_id not in self.users:
            raise KeycloakGetError(error_message="User not found", response_code=404)
        return {"id": user_id, "enabled": self.users[user_id].get("enabled", True)}

    def get_user_groups(self, user_id: str, brief_representation: bool = True) -> list[dict[str, Any]]:
        return [{"path": path} for path in self.users[user_id].get("groups", [])]

    def get_client_id(self, client_id: str) -> str:
        return f"uuid-of-{client_id}"

    def get_composite_client_roles_of_user(
        self, user_id: str, client_id: str, brief_representation: bool = False
    ) -> list[dict[str, Any]]:
        assert client_id == "uuid-of-gennai-web"
        return [{"name": name} for name in self.users[user_id].get("client_roles", [])]


def test_recheck_revokes_keys_of_creators_the_idp_no_longer_makes_admin(
    ministries: tuple[Any, Any],
) -> None:
    a, b = ministries
    demoted = make_user("demoted", a, ["ministry_admin"])  # Gennai still thinks so: no login since
    kept = make_user("kept", a, ["ministry_admin"])
    unknown = make_user("unknown", a, ["ministry_admin"])
    Membership.objects.create(user=demoted, ministry=b, roles=["ministry_admin"])
    demoted_a1, p1 = api_key_create(actor=demoted, ministry=a, name="a1", expires_at=soon())
    demoted_a2, _ = api_key_create(actor=demoted, ministry=a, name="a2", expires_at=soon())
    demoted_b, pb = api_key_create(actor=demoted, ministry=b, name="b", expires_at=soon())
    kept_key, _ = api_key_create(actor=kept, ministry=a, name="kept", expires_at=soon())
    unknown_key, _ = api_key_create(actor=unknown, ministry=a, name="unknown", expires_at=soon())
    platform_key, _ = api_key_create(actor=None, ministry=a, name="ops", expires_at=soon())
    directory = FakeDirectory(
        {"sub-demoted": frozenset({"soumu"}), "sub-kept": frozenset({"digital"}), "sub-unknown": None}
    )
    version = read_version(keys.VERSION_NAME)

    revoked = api_keys_recheck_creators(directory=directory)

    assert sorted(k.name for k in revoked) == ["a1", "a2"]  # still admin in B: B's key stays
    assert sorted(directory.asked) == ["sub-demoted", "sub-kept", "sub-unknown"]  # once per creator
    for key in (demoted_a1, demoted_a2, demoted_b, kept_key, unknown_key, platform_key):
        key.refresh_from_db()
    assert demoted_a1.revoked_reason == demoted_a2.revoked_reason == "creator_not_admin"
    assert demoted_b.revoked_at is None and kept_key.revoked_at is None
    assert unknown_key.revoked_at is None and platform_key.revoked_at is None  # "cannot tell": left alone
    events = AuditEvent.objects.filter(action="gateway.api_key.revoke_creator_not_admin")
    assert events.count() == 2 and {e.data["source"] for e in events} == {"identity_provider"}
    assert read_version(keys.VERSION_NAME) != version
    keys.reset_for_tests()
    assert keys.check_key(keys.lookup_key(p1), p1) == keys.KeyState.REVOKED
    assert keys.check_key(keys.lookup_key(pb), pb) == keys.KeyState.VALID


def test_keycloak_directory_reads_roles_like_a_login() -> None:
    admin = FakeKeycloakAdmin(
        {
            "u1": {"groups": ["/ministries/digital/admins", "/ministries/soumu"]},
            "u2": {"groups": ["/ministries/digital"], "client_roles": ["soumu:ministry_admin", "x:other"]},
            "u3": {"groups": ["/ministries/digital/admins"], "enabled": False},
        }
    )
    directory = KeycloakDirectory(admin, client_id="gennai-web")
    assert directory.admin_ministry_codes("u1") == frozenset({"digital"})
    assert directory.admin_ministry_codes("u2") == frozenset({"soumu"})
    assert directory.admin_ministry_codes("u3") == frozenset()  # disabled
    assert directory.admin_ministry_codes("gone") == frozenset()  # deleted in the IdP


def test_keycloak_directory_errors_other_than_not_found_propagate() -> None:
    class Broken(FakeKeycloakAdmin):
        def get_user(self, user_id: str) -> dict[str, Any]:
            raise KeycloakGetError(error_message="boom", response_code=500)

    with pytest.raises(KeycloakGetError):
        KeycloakDirectory(Broken({}), client_id="gennai-web").admin_ministry_codes("u1")


def test_task_is_a_no_op_without_keycloak(ministries: tuple[Any, Any], settings: Any) -> None:
    settings.KEYCLOAK_URL = ""
    admin = make_user("task-admin", ministries[0], ["ministry_admin"])
    key, _ = api_key_create(actor=admin, ministry=ministries[0], name="t", expires_at=soon())
    assert tasks.api_key_creators_recheck() == 0
    key.refresh_from_db()
    assert key.revoked_at is None


def test_task_asks_keycloak(ministries: tuple[Any, Any], settings: Any, monkeypatch: Any) -> None:
    settings.KEYCLOAK_URL = "https://keycloak.example"
    settings.OIDC_RP_CLIENT_ID = "gennai-web"
    admin = make_user("task-admin2", ministries[0], ["ministry_admin"])
    key, _ = api_key_create(actor=admin, ministry=ministries[0], name="t", expires_at=soon())
    fake = FakeKeycloakAdmin({"sub-task-admin2": {"groups": ["/ministries/digital"]}})  # demoted to staff
    monkeypatch.setattr("apps.accounts.keycloak_sync.keycloak_admin_from_settings", lambda: fake)
    assert tasks.api_key_creators_recheck() == 1
    key.refresh_from_db()
    assert key.revoked_reason == "creator_not_admin"
