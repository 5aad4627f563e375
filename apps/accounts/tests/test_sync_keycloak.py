"""sync_keycloak: realm roles and /ministries/<code> groups.

No Keycloak server can run here, so the sync logic is tested against
:class:`FakeKeycloakAdmin`, a stateful stand-in for the few ``KeycloakAdmin``
methods it uses (raising python-keycloak's own exceptions as Keycloak would).
The real client library is exercised against a closed port and a loopback
HTTP stub for error translation, and the ``live_keycloak`` tier runs the real
sync against ``KEYCLOAK_URL`` when it is set.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.urls import reverse
from keycloak.exceptions import (
    KeycloakAuthenticationError,
    KeycloakConnectionError,
    KeycloakDeleteError,
    KeycloakGetError,
    KeycloakPostError,
    KeycloakPutError,
)

from apps.accounts.keycloak_sync import (
    REALM_ROLES,
    KeycloakSyncError,
    SyncReport,
    keycloak_admin_from_settings,
    keycloak_sync,
    role_description,
)
from apps.tenancy.models import Ministry, Role

ALL_ROLES = [r.value for r in REALM_ROLES]  # only platform-wide roles are realm roles


def tree(code: str) -> list[str]:
    """A ministry group and its role subgroups, in the order the sync reports them."""
    path = f"/ministries/{code}"
    return [path, f"{path}/admins", f"{path}/procurement", f"{path}/auditors"]


WRITES = {"create_realm_role", "update_realm_role", "create_group", "update_group", "delete_group"}


class FakeKeycloakAdmin:
    """In-memory Keycloak realm behind the ``KeycloakAdmin`` methods the sync calls."""

    def __init__(self, realm: str = "gennai") -> None:
        self.realm = realm
        self.roles: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}  # id -> {id, name, path, parent, attributes}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, Exception] = {}

    # helpers ---------------------------------------------------------------
    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]

    def writes(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [c for c in self.calls if c[0] in WRITES]

    def paths(self) -> set[str]:
        return {g["path"] for g in self.groups.values()}

    def add_group(self, name: str, parent_path: str | None = None, **attributes: list[str]) -> str:
        parent = next((g["id"] for g in self.groups.values() if g["path"] == parent_path), None)
        gid = str(uuid.uuid4())
        path = f"{parent_path or ''}/{name}"
        self.groups[gid] = {"id": gid, "name": name, "path": path, "parent": parent, "attributes": attributes}
        return gid

    def by_path(self, path: str) -> dict[str, Any]:
        return next(g for g in self.groups.values() if g["path"] == path)

    @staticmethod
    def _repr(group: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in group.items() if k != "parent"}

    # KeycloakAdmin surface -------------------------------------------------
    def get_current_realm(self) -> str:
        return self.realm

    def get_realm_roles(self, brief_representation: bool = True) -> list[dict[str, Any]]:
        self._record("get_realm_roles")
        return [dict(r) for r in self.roles.values()]

    def create_realm_role(self, payload: dict[str, Any], skip_exists: bool = False) -> str:
        self._record("create_realm_role", payload)
        if payload["name"] in self.roles:
            raise KeycloakPostError(
                error_message="Role with name already exists", response_code=409, response_body=b"{}"
            )
        self.roles[payload["name"]] = {"id": str(uuid.uuid4()), **payload}
        return str(payload["name"])

    def update_realm_role(self, role_name: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._record("update_realm_role", role_name, payload)
        if role_name not in self.roles:
            raise KeycloakPutError(error_message="Could not find role", response_code=404)
        self.roles[role_name].update(payload)
        return {}

    def get_group_by_path(self, path: str) -> dict[str, Any]:
        self._record("get_group_by_path", path)
        for group in self.groups.values():
            if group["path"] == path:
                return self._repr(group)
        raise KeycloakGetError(
            error_message=b'{"error":"Group path does not exist"}',
            response_code=404,
            response_body=b'{"error":"Group path does not exist"}',
        )

    def get_group_children(self, group_id: str, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._record("get_group_children", group_id)
        return [self._repr(g) for g in self.groups.values() if g["parent"] == group_id]

    def create_group(
        self, payload: dict[str, Any], parent: str | None = None, skip_exists: bool = False
    ) -> str | None:
        self._record("create_group", payload, parent)
        parent_path = self.groups[parent]["path"] if parent else None
        if any(g["name"] == payload["name"] and g["parent"] == parent for g in self.groups.values()):
            raise KeycloakPostError(error_message="Top level group named already exists.", response_code=409)
        return self.add_group(payload["name"], parent_path, **payload.get("attributes", {}))

    def update_group(self, group_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._record("update_group", group_id, payload)
        group = self.groups[group_id]
        group["name"] = payload["name"]
        group["attributes"] = dict(payload.get("attributes") or {})
        return {}

    def delete_group(self, group_id: str) -> dict[str, Any]:
        self._record("delete_group", group_id)
        if group_id not in self.groups:
            raise KeycloakDeleteError(error_message="Could not find group by id", response_code=404)
        del self.groups[group_id]
        return {}


@pytest.fixture
def fake() -> FakeKeycloakAdmin:
    return FakeKeycloakAdmin()


def _all_ministries() -> list[Ministry]:
    return list(Ministry.objects.all())


# --- sync logic ----------------------------------------------------------------------


def test_first_run_creates_roles_and_ministry_groups(fake: FakeKeycloakAdmin, ministries: Any) -> None:
    report = keycloak_sync(admin=fake, ministries=_all_ministries())

    assert report.created_roles == ALL_ROLES
    assert {name: r["description"] for name, r in fake.roles.items()} == {
        r.value: role_description(r) for r in REALM_ROLES
    }
    assert set(fake.roles) == {"platform_admin", "auditor", "procurement_officer"}
    assert "ministry_admin" not in fake.roles and "staff" not in fake.roles
    assert fake.roles["auditor"]["description"].startswith("監査担当")
    assert report.created_groups == ["/ministries", *tree("digital"), *tree("soumu")]
    assert fake.paths() == {"/ministries", *tree("digital"), *tree("soumu")}
    assert fake.by_path("/ministries/digital")["attributes"] == {
        "name_ja": ["デジタル庁"],
        "name_en": ["Digital Agency"],
    }
    assert report.orphaned_groups == [] and report.changed


def test_second_run_creates_nothing(fake: FakeKeycloakAdmin, ministries: Any) -> None:
    keycloak_sync(admin=fake, ministries=_all_ministries())
    writes_after_first = len(fake.writes())
    state = (json.dumps(fake.roles, sort_keys=True), json.dumps(fake.groups, sort_keys=True))

    report = keycloak_sync(admin=fake, ministries=_all_ministries())

    assert len(fake.writes()) == writes_after_first
    assert (json.dumps(fake.roles, sort_keys=True), json.dumps(fake.groups, sort_keys=True)) == state
    assert report.created_roles == report.updated_roles == []
    assert report.created_groups == report.updated_groups == report.deleted_groups == []
    assert report.existing_roles == ALL_ROLES
    assert report.existing_groups == ["/ministries", *tree("digital"), *tree("soumu")]
    assert not report.changed


def test_changed_names_and_descriptions_are_updated_keeping_foreign_attributes(
    fake: FakeKeycloakAdmin, ministries: Any
) -> None:
    keycloak_sync(admin=fake, ministries=_all_ministries())
    fake.roles["auditor"]["description"] = "edited by hand"
    fake.by_path("/ministries/soumu")["attributes"]["cost_center"] = ["42"]
    Ministry.objects.filter(code="soumu").update(name_en="MIC")

    report = keycloak_sync(admin=fake, ministries=_all_ministries())

    assert report.updated_roles == ["auditor"]
    assert fake.roles["auditor"]["description"] == role_description(Role.AUDITOR)
    assert report.updated_groups == ["/ministries/soumu"]
    assert fake.by_path("/ministries/soumu")["attributes"] == {
        "name_ja": ["総務省"],
        "name_en": ["MIC"],
        "cost_center": ["42"],
    }
    assert report.created_roles == report.created_groups == []


def test_existing_roles_and_unrelated_groups_are_left_alone(fake: FakeKeycloakAdmin, ministries: Any) -> None:
    fake.roles["offline_access"] = {"id": "x", "name": "offline_access", "description": "keycloak's own"}
    fake.add_group("contractors")
    fake.add_group("ministries")
    fake.add_group("digital", "/ministries", name_ja=["デジタル庁"], name_en=["Digital Agency"])
    fake.add_group("team-a", "/ministries/digital")

    report = keycloak_sync(admin=fake, ministries=_all_ministries())

    assert fake.roles["offline_access"]["description"] == "keycloak's own"
    assert "/contractors" in fake.paths() and "/ministries/digital/team-a" in fake.paths()
    assert report.existing_groups == ["/ministries", "/ministries/digital"]
    assert report.created_groups == [*tree("digital")[1:], *tree("soumu")]
    assert report.orphaned_groups == []


def test_groups_without_active_ministry_are_reported_not_deleted(
    fake: FakeKeycloakAdmin, ministries: Any
) -> None:
    Ministry.objects.create(
        code="kankyo", name_ja="環境省", name_en="Ministry of the Environment", active=False
    )
    keycloak_sync(admin=fake, ministries=_all_ministries())
    fake.add_group("kankyo", "/ministries")
    fake.add_group("old-agency", "/ministries")

    report = keycloak_sync(admin=fake, ministries=_all_ministries())

    assert report.orphaned_groups == ["/ministries/kankyo", "/ministries/old-agency"]
    assert report.deleted_groups == []
    assert {"/ministries/kankyo", "/ministries/old-agency"} <= fake.paths()
    assert not [c for c in fake.calls if c[0] == "delete_group"]
    assert any("--prune" in line for line in report.lines())


def test_prune_deletes_orphaned_groups_only(fake: FakeKeycloakAdmin, ministries: Any) -> None:
    keycloak_sync(admin=fake, ministries=_all_ministries())
    fake.add_group("old-agency", "/ministries")

    report = keycloak_sync(admin=fake, ministries=_all_ministries(), prune=True)

    assert report.orphaned_groups == report.deleted_groups == ["/ministries/old-agency"]
    assert fake.paths() == {"/ministries", *tree("digital"), *tree("soumu")}
    assert [c[0] for c in fake.writes()].count("delete_group") == 1


def test_deactivated_ministry_becomes_orphaned(fake: FakeKeycloakAdmin, ministries: Any) -> None:
    keycloak_sync(admin=fake, ministries=_all_ministries())
    Ministry.objects.filter(code="soumu").update(active=False)

    report = keycloak_sync(admin=fake, ministries=_all_ministries())

    assert report.orphaned_groups == ["/ministries/soumu"]
    assert report.existing_groups == ["/ministries", *tree("digital")]


def test_dry_run_writes_nothing(fake: FakeKeycloakAdmin, ministries: Any) -> None:
    fake.add_group("ministries")
    fake.add_group("old-agency", "/ministries")

    report = keycloak_sync(admin=fake, ministries=_all_ministries(), dry_run=True, prune=True)

    assert fake.writes() == []
    assert fake.roles == {}
    assert fake.paths() == {"/ministries", "/ministries/old-agency"}
    assert report.dry_run and report.changed
    assert report.created_roles == ALL_ROLES
    assert report.created_groups == [*tree("digital"), *tree("soumu")]
    assert report.deleted_groups == ["/ministries/old-agency"]
    assert "dry run" in report.lines()[0]


def test_dry_run_on_empty_realm_reports_everything(fake: FakeKeycloakAdmin, ministries: Any) -> None:
    report = keycloak_sync(admin=fake, ministries=_all_ministries(), dry_run=True)

    assert fake.writes() == []
    assert report.created_groups == ["/ministries", *tree("digital"), *tree("soumu")]


def test_legacy_ministry_realm_roles_are_reported_not_touched(
    fake: FakeKeycloakAdmin, ministries: Any
) -> None:
    """Realm roles ``staff``/``ministry_admin`` from before grant nothing now; the sync says so."""
    fake.roles["ministry_admin"] = {"id": "x", "name": "ministry_admin", "description": "府省庁管理者"}
    fake.roles["staff"] = {"id": "y", "name": "staff", "description": "職員"}

    report = keycloak_sync(admin=fake, ministries=_all_ministries())

    assert report.legacy_roles == ["ministry_admin", "staff"]
    assert "ministry_admin" in fake.roles, "left for the realm's admins to remove"
    assert any(line.startswith("legacy realm roles") for line in report.lines())


# --- error translation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "exc", "ja", "en"),
    [
        (
            "get_realm_roles",
            KeycloakConnectionError("Can't connect to server"),
            "接続できません",
            "Cannot connect to Keycloak",
        ),
        (
            "get_realm_roles",
            KeycloakAuthenticationError(
                error_message=b"x",
                response_code=401,
                response_body=b'{"error":"invalid_grant","error_description":"Invalid user credentials"}',
            ),
            "認証を拒否",
            "invalid_grant: Invalid user credentials",
        ),
        (
            "get_realm_roles",
            KeycloakPostError(
                error_message=b"x",
                response_code=400,
                response_body=b'{"error":"unauthorized_client","error_description":"Public client"}',
            ),
            "トークン発行を拒否",
            "unauthorized_client",
        ),
        (
            "get_realm_roles",
            KeycloakGetError(
                error_message=b"x", response_code=404, response_body=b'{"error":"Realm not found."}'
            ),
            "レルム gennai が見つかりません",
            "Realm gennai not found",
        ),
        (
            "create_group",
            KeycloakPostError(error_message="HTTP 403 Forbidden", response_code=403, response_body=b""),
            "manage-realm",
            "manage-realm, view-realm and manage-users",
        ),
        (
            "get_group_by_path",
            KeycloakGetError(error_message=b"boom", response_code=500, response_body=b"boom"),
            "API 呼び出しに失敗",
            "find group /ministries: HTTP 500: boom",
        ),
    ],
)
def test_keycloak_errors_become_bilingual_sync_errors(
    fake: FakeKeycloakAdmin, ministries: Any, method: str, exc: Exception, ja: str, en: str
) -> None:
    fake.fail[method] = exc

    with pytest.raises(KeycloakSyncError) as info:
        keycloak_sync(admin=fake, ministries=_all_ministries())

    assert ja in info.value.message_ja
    assert en in info.value.message_en
    assert info.value.__cause__ is exc


# --- admin client construction (no network) ---------------------------------------------


@override_settings(
    KEYCLOAK_URL="https://sso.example.go.jp/auth",
    KEYCLOAK_REALM="gennai",
    KEYCLOAK_ADMIN_CLIENT_ID="gennai-sync",
    KEYCLOAK_ADMIN_CLIENT_SECRET="s3cret",
    KEYCLOAK_ADMIN_USERNAME="admin",
    KEYCLOAK_ADMIN_PASSWORD="pw",
)
def test_admin_uses_client_credentials_in_the_managed_realm_when_a_secret_is_set() -> None:
    connection = keycloak_admin_from_settings().connection

    assert connection.grant_type == "client_credentials"
    assert connection.client_id == "gennai-sync" and connection.client_secret_key == "s3cret"
    assert connection.username is None and connection.password is None
    assert connection.realm_name == "gennai" and connection.user_realm_name is None
    assert connection.server_url == "https://sso.example.go.jp/auth/"  # urljoin keeps /auth


@override_settings(
    KEYCLOAK_URL="https://sso.example.go.jp/",
    KEYCLOAK_REALM="gennai",
    KEYCLOAK_ADMIN_CLIENT_ID="admin-cli",
    KEYCLOAK_ADMIN_CLIENT_SECRET="",
    KEYCLOAK_ADMIN_USERNAME="admin",
    KEYCLOAK_ADMIN_PASSWORD="pw",
)
def test_admin_uses_password_grant_against_master_without_a_secret() -> None:
    connection = keycloak_admin_from_settings().connection

    assert connection.grant_type == "password"
    assert (connection.username, connection.password, connection.client_id) == ("admin", "pw", "admin-cli")
    assert connection.realm_name == "gennai" and connection.user_realm_name == "master"


# --- the management command -------------------------------------------------------------


@override_settings(KEYCLOAK_URL="")
def test_command_requires_keycloak_url(db: None) -> None:
    with pytest.raises(CommandError, match="KEYCLOAK_URL is not set") as info:
        call_command("sync_keycloak")
    assert "KEYCLOAK_URL が設定されていません" in str(info.value)


@override_settings(KEYCLOAK_URL="sso.example.go.jp")
def test_command_rejects_url_without_scheme(db: None) -> None:
    with pytest.raises(CommandError, match=r"http\(s\)://"):
        call_command("sync_keycloak")


@override_settings(KEYCLOAK_URL="https://sso.example.go.jp")
def test_command_syncs_and_reports(
    fake: FakeKeycloakAdmin, ministries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "apps.accounts.management.commands.sync_keycloak.keycloak_admin_from_settings", lambda: fake
    )
    fake.add_group("ministries")
    fake.add_group("old-agency", "/ministries")
    out, err = StringIO(), StringIO()

    call_command("sync_keycloak", "--dry-run", stdout=out, stderr=err)
    assert fake.writes() == []
    assert "dry run" in out.getvalue() and "/ministries/old-agency" in err.getvalue()

    call_command("sync_keycloak", stdout=out, stderr=err)
    assert "roles created: " + ", ".join(ALL_ROLES) in out.getvalue()
    assert "/ministries/old-agency" in fake.paths()

    out = StringIO()
    call_command("sync_keycloak", "--prune", stdout=out, stderr=StringIO())
    assert "groups deleted: /ministries/old-agency" in out.getvalue()
    assert "/ministries/old-agency" not in fake.paths()

    out = StringIO()
    call_command("sync_keycloak", stdout=out, stderr=StringIO())
    assert "no changes" in out.getvalue()


@override_settings(
    KEYCLOAK_URL="http://127.0.0.1:1",
    KEYCLOAK_ADMIN_CLIENT_SECRET="x",
    KEYCLOAK_ADMIN_CLIENT_ID="gennai-sync",
)
def test_command_bad_url_is_a_clean_command_error_with_the_real_client(ministries: Any) -> None:
    with pytest.raises(CommandError) as info:
        call_command("sync_keycloak")
    message = str(info.value)
    assert "Keycloak に接続できません" in message and "Cannot connect to Keycloak" in message
    assert "KEYCLOAK_URL=http://127.0.0.1:1" in message


class _StubKeycloak(http.server.BaseHTTPRequestHandler):
    """Answers every request with the class's ``status`` and ``body``."""

    status = 401
    body = json.dumps(
        {"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"}
    ).encode()
    content_type = "application/json"

    def do_POST(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _NotKeycloak(_StubKeycloak):
    """Some other web server: every URL is an HTML page."""

    status = 200
    body = b"<html><body>Welcome to nginx!</body></html>"
    content_type = "text/html"


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def rejecting_server() -> Iterator[str]:
    yield from _serve(_StubKeycloak)


@pytest.fixture
def not_keycloak_server() -> Iterator[str]:
    yield from _serve(_NotKeycloak)


def test_command_bad_credentials_is_a_clean_command_error_with_the_real_client(
    ministries: Any, rejecting_server: str
) -> None:
    with (
        override_settings(
            KEYCLOAK_URL=rejecting_server,
            KEYCLOAK_ADMIN_CLIENT_ID="gennai-sync",
            KEYCLOAK_ADMIN_CLIENT_SECRET="no",
        ),
        pytest.raises(CommandError) as info,
    ):
        call_command("sync_keycloak")
    message = str(info.value)
    assert "認証を拒否" in message
    assert "Keycloak rejected the admin credentials (unauthorized_client: Invalid client" in message


def test_command_url_of_another_server_is_a_clean_command_error(
    ministries: Any, not_keycloak_server: str
) -> None:
    with (
        override_settings(
            KEYCLOAK_URL=not_keycloak_server,
            KEYCLOAK_ADMIN_CLIENT_ID="gennai-sync",
            KEYCLOAK_ADMIN_CLIENT_SECRET="x",
        ),
        pytest.raises(CommandError) as info,
    ):
        call_command("sync_keycloak")
    message = str(info.value)
    assert "想定外の応答" in message and "is KEYCLOAK_URL a Keycloak server?" in message


# --- the realm export ------------------------------------------------------------------------

REALM_EXPORT = Path(settings.BASE_DIR) / "infra" / "keycloak" / "realm-gennai.json"


def test_realm_export_matches_the_app() -> None:
    """infra/keycloak/realm-gennai.json parses and agrees with Role, the claims mapping and our URLs."""
    realm = json.loads(REALM_EXPORT.read_text(encoding="utf-8"))
    assert realm["realm"] == settings.KEYCLOAK_REALM
    assert {r["name"]: r["description"] for r in realm["roles"]["realm"]} == {
        r.value: role_description(r) for r in REALM_ROLES
    }
    (top,) = realm["groups"]
    assert top["path"] == "/ministries"
    assert {g["path"] for g in top["subGroups"]} == {"/ministries/digital", "/ministries/soumu"}
    for ministry in top["subGroups"]:
        assert [g["path"] for g in ministry["subGroups"]] == tree(ministry["name"])[1:]
        assert all(not g["realmRoles"] for g in ministry["subGroups"]), "no realm role on a ministry group"

    clients = {c["clientId"]: c for c in realm["clients"]}
    web = clients[settings.OIDC_RP_CLIENT_ID]
    assert not web["publicClient"] and web["standardFlowEnabled"]
    other_flows = ("implicitFlowEnabled", "directAccessGrantsEnabled", "serviceAccountsEnabled")
    assert not any(web[flow] for flow in other_flows)
    assert web["attributes"]["pkce.code.challenge.method"] == "S256"
    assert web["redirectUris"] == ["https://gennai.example.go.jp" + reverse("accounts:oidc_callback")]
    assert web["attributes"]["backchannel.logout.url"] == "https://gennai.example.go.jp" + reverse(
        "accounts:backchannel_logout"
    )
    assert web["attributes"]["backchannel.logout.session.required"] == "true"
    mappers = {m["protocolMapper"]: m["config"] for m in web["protocolMappers"]}
    groups = mappers["oidc-group-membership-mapper"]
    assert groups["claim.name"] == "groups" and groups["full.path"] == "true"
    roles = mappers["oidc-usermodel-realm-role-mapper"]
    assert roles["claim.name"] == "realm_access.roles" and roles["multivalued"] == "true"
    client_roles = mappers["oidc-usermodel-client-role-mapper"]  # <code>:<role> client roles
    assert client_roles["usermodel.clientRoleMapping.clientId"] == web["clientId"]
    assert client_roles["claim.name"] == "resource_access.${client_id}.roles"
    for config in (groups, roles, client_roles):
        assert config["id.token.claim"] == config["userinfo.token.claim"] == "true"
    (scope,) = realm["scopeMappings"]
    assert scope["client"] == web["clientId"] and sorted(scope["roles"]) == sorted(ALL_ROLES)

    sync = clients["gennai-sync"]
    assert sync["serviceAccountsEnabled"] and not sync["standardFlowEnabled"]
    (account,) = [u for u in realm["users"] if u.get("serviceAccountClientId") == "gennai-sync"]
    assert {"manage-realm", "view-realm", "manage-users"} <= set(account["clientRoles"]["realm-management"])
    for client in clients.values():
        assert client["secret"].startswith("${"), "no literal secrets in the export"


# --- live tier: a real Keycloak ----------------------------------------------------------


@pytest.mark.live_keycloak
@pytest.mark.skipif(not settings.KEYCLOAK_URL, reason="set KEYCLOAK_URL and KEYCLOAK_ADMIN_* to run")
def test_live_sync_twice_against_keycloak(ministries: Any) -> None:
    admin = keycloak_admin_from_settings()
    orphan = f"zz-live-orphan-{uuid.uuid4().hex[:8]}"
    orphan_id: str | None = None
    try:
        first: SyncReport = keycloak_sync(admin=admin, ministries=_all_ministries())
        top = admin.get_group_by_path("/ministries")
        orphan_id = admin.create_group({"name": orphan}, parent=top["id"])

        second = keycloak_sync(admin=admin, ministries=_all_ministries())

        assert second.created_roles == second.updated_roles == []
        assert second.created_groups == second.updated_groups == second.deleted_groups == []
        assert f"/ministries/{orphan}" in second.orphaned_groups
        assert set(ALL_ROLES) <= set(first.created_roles + first.existing_roles + first.updated_roles)
        for role in REALM_ROLES:
            assert admin.get_realm_role(role.value)["description"] == role_description(role)
        for ministry in ministries:
            for path in tree(ministry.code)[1:]:
                assert admin.get_group_by_path(path)["path"] == path
            group = admin.get_group_by_path(f"/ministries/{ministry.code}")
            assert group["path"] == f"/ministries/{ministry.code}"
            assert group["attributes"]["name_ja"] == [ministry.name_ja]
            assert group["attributes"]["name_en"] == [ministry.name_en]
    finally:
        if orphan_id:
            admin.delete_group(orphan_id)
