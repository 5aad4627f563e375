"""Keep Keycloak's realm roles and ministry groups in line with our data.

``manage.py sync_keycloak`` calls :func:`keycloak_sync`. It is idempotent:

* every *platform-wide* :class:`~apps.tenancy.models.Role`
  (:data:`apps.accounts.claims.PLATFORM_ROLES`) exists as a realm role
  (description: the Japanese label). Ministry roles are deliberately not realm
  roles (DESIGN invariant 9): a realm role holds in every ministry at once.
  Realm roles left over from before (``staff``, ``ministry_admin``, …) are
  reported as ``legacy_roles``: they grant nothing any more;
* the top group ``ministries`` exists, with one subgroup per *active*
  :class:`~apps.tenancy.models.Ministry` (path ``/ministries/<code>``,
  attributes ``name_ja`` / ``name_en``; its members are the ministry's staff),
  and under each the role subgroups ``admins``, ``procurement`` and
  ``auditors`` (:data:`apps.accounts.claims.ROLE_SUBGROUPS`), which is what
  :mod:`apps.accounts.claims` reads from the ``groups`` claim;
* subgroups of ``ministries`` without an active ministry are reported as
  orphaned and deleted only with ``prune=True``.

Nothing else in the realm is touched: roles and groups outside these are left
alone (e.g. team subgroups of a ministry), and attributes other than
``name_ja`` / ``name_en`` are kept. Who is in which group is decided in
Keycloak by people (audited there), not by this sync.

Only a small part of python-keycloak's ``KeycloakAdmin`` is used (see
:class:`KeycloakAdminAPI`), so tests can stand in a fake for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.utils import translation
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection
from keycloak.exceptions import (
    KeycloakAuthenticationError,
    KeycloakConnectionError,
    KeycloakError,
)

from apps.tenancy.models import Ministry, Role

from .claims import MINISTRY_GROUP_PREFIX, PLATFORM_ROLES, ROLE_SUBGROUPS

MINISTRIES_GROUP = MINISTRY_GROUP_PREFIX.strip("/")  # "ministries"
MINISTRY_ATTRIBUTES = ("name_ja", "name_en")
#: Realm roles the sync maintains, in ``Role`` order: only platform-wide ones.
REALM_ROLES = [role for role in Role if role.value in PLATFORM_ROLES]
ADMIN_TIMEOUT_SECONDS = 20
HTTP_BAD_REQUEST = 400
HTTP_UNAUTHORIZED = 401
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404


class KeycloakAdminAPI(Protocol):
    """The part of ``keycloak.KeycloakAdmin`` (python-keycloak 7) that the sync uses."""

    def get_current_realm(self) -> str | None: ...

    def get_realm_roles(self, brief_representation: bool = ...) -> list[Any]: ...

    def create_realm_role(self, payload: dict[str, Any], skip_exists: bool = ...) -> str: ...

    def update_realm_role(self, role_name: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def get_group_by_path(self, path: str) -> dict[str, Any]: ...

    def get_group_children(self, group_id: str, query: dict[str, Any] | None = ...) -> list[Any]: ...

    def create_group(
        self, payload: dict[str, Any], parent: str | None = ..., skip_exists: bool = ...
    ) -> str | None: ...

    def update_group(self, group_id: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def delete_group(self, group_id: str) -> dict[str, Any]: ...


class KeycloakSyncError(Exception):
    """A Keycloak call failed; ``message_ja`` / ``message_en`` say why, without a traceback."""

    def __init__(self, *, message_ja: str, message_en: str, step: str) -> None:
        self.message_ja = message_ja
        self.message_en = message_en
        self.step = step
        super().__init__(f"{message_ja}\n{message_en}")


@dataclass
class SyncReport:
    """What a sync created, found, changed, orphaned and deleted (group items are paths)."""

    realm: str
    dry_run: bool = False
    prune: bool = False
    created_roles: list[str] = field(default_factory=list)
    existing_roles: list[str] = field(default_factory=list)
    updated_roles: list[str] = field(default_factory=list)
    legacy_roles: list[str] = field(default_factory=list)
    created_groups: list[str] = field(default_factory=list)
    existing_groups: list[str] = field(default_factory=list)
    updated_groups: list[str] = field(default_factory=list)
    orphaned_groups: list[str] = field(default_factory=list)
    deleted_groups: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the run wrote (or, in a dry run, would write) anything."""
        return bool(
            self.created_roles
            or self.updated_roles
            or self.created_groups
            or self.updated_groups
            or self.deleted_groups
        )

    def lines(self) -> list[str]:
        """Human-readable summary, one item per line."""
        verb = "would be " if self.dry_run else ""
        out = [f"realm {self.realm}" + (" (dry run: nothing written)" if self.dry_run else "")]
        sections = [
            (f"roles {verb}created", self.created_roles),
            (f"roles {verb}updated", self.updated_roles),
            ("roles unchanged", self.existing_roles),
            (f"groups {verb}created", self.created_groups),
            (f"groups {verb}updated", self.updated_groups),
            ("groups unchanged", self.existing_groups),
            ("groups orphaned (no active ministry)", self.orphaned_groups),
            (f"groups {verb}deleted", self.deleted_groups),
        ]
        for title, items in sections:
            if items:
                out.append(f"{title}: {', '.join(items)}")
        if self.legacy_roles:
            out.append(
                f"legacy realm roles (grant nothing; ministry roles come from /ministries/<code>/… groups): "
                f"{', '.join(self.legacy_roles)}"
            )
        if self.orphaned_groups and not self.prune:
            out.append("orphaned groups are kept; run with --prune to delete them")
        return out


def keycloak_admin_from_settings() -> KeycloakAdmin:
    """A ``KeycloakAdmin`` for ``settings.KEYCLOAK_REALM``, authenticated from settings.

    * ``KEYCLOAK_ADMIN_CLIENT_SECRET`` set: client-credentials grant of the
      service-account client ``KEYCLOAK_ADMIN_CLIENT_ID`` (``gennai-sync`` in
      ``infra/keycloak/realm-gennai.json``), which lives in the managed realm.
    * otherwise: password grant of ``KEYCLOAK_ADMIN_USERNAME`` /
      ``KEYCLOAK_ADMIN_PASSWORD`` against the *master* realm's client
      (``admin-cli``), managing ``KEYCLOAK_REALM``.

    No request is made here: python-keycloak fetches the token on the first call.
    """
    server_url = str(settings.KEYCLOAK_URL).strip()
    if not server_url:
        raise ValueError("KEYCLOAK_URL is not set")
    # python-keycloak joins paths with urljoin: without a trailing slash a
    # context path such as ``/auth`` would be dropped.
    server_url = server_url.rstrip("/") + "/"
    realm = str(settings.KEYCLOAK_REALM)
    client_id = str(settings.KEYCLOAK_ADMIN_CLIENT_ID)
    secret = str(settings.KEYCLOAK_ADMIN_CLIENT_SECRET)
    if secret:
        connection = KeycloakOpenIDConnection(
            server_url=server_url,
            realm_name=realm,
            client_id=client_id,
            client_secret_key=secret,
            grant_type="client_credentials",
            timeout=ADMIN_TIMEOUT_SECONDS,
        )
    else:
        connection = KeycloakOpenIDConnection(
            server_url=server_url,
            realm_name=realm,
            user_realm_name="master",
            client_id=client_id,
            username=str(settings.KEYCLOAK_ADMIN_USERNAME),
            password=str(settings.KEYCLOAK_ADMIN_PASSWORD),
            grant_type="password",
            timeout=ADMIN_TIMEOUT_SECONDS,
        )
    return KeycloakAdmin(connection=connection)


def role_description(role: Role) -> str:
    """Realm-role description: the role's Japanese label (independent of the UI language)."""
    with translation.override("ja"):
        return str(role.label)


def _ministry_attributes(ministry: Ministry) -> dict[str, list[str]]:
    return {"name_ja": [ministry.name_ja], "name_en": [ministry.name_en]}


def _keycloak_detail(exc: KeycloakError) -> str:
    """Keycloak's own words from an error: ``error_description``/``error``/``message`` or the body."""
    raw: Any = exc.response_body if exc.response_body else exc.error_message
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    text = str(raw or "").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        keys = ("error", "error_description", "errorMessage", "message")
        parts = [str(body[k]) for k in keys if body.get(k)]
        if parts:
            return ": ".join(parts)
    if text.startswith("<"):
        text = "HTML page, not a Keycloak API response"
    if exc.__cause__ is not None and isinstance(exc, KeycloakConnectionError):
        text = f"{text} ({type(exc.__cause__).__name__})"
    return " ".join(text.split())[:300]


def unexpected_response_error(exc: Exception, *, step: str) -> KeycloakSyncError:
    """python-keycloak got an answer it could not parse: usually KEYCLOAK_URL is not Keycloak."""
    return KeycloakSyncError(
        message_ja=f"Keycloak から想定外の応答がありました({step})。KEYCLOAK_URL を確認してください。",
        message_en=(
            f"Unexpected response from Keycloak ({step}): is KEYCLOAK_URL a Keycloak server? "
            f"({type(exc).__name__})"
        ),
        step=step,
    )


def explain_keycloak_error(exc: KeycloakError, *, step: str, realm: str) -> KeycloakSyncError:
    """Turn a python-keycloak exception into a short Japanese + English explanation."""
    code = exc.response_code
    detail = _keycloak_detail(exc)
    if isinstance(exc, KeycloakConnectionError):
        ja = "Keycloak に接続できません。KEYCLOAK_URL とネットワークを確認してください。"
        en = f"Cannot connect to Keycloak: check KEYCLOAK_URL and the network ({detail})."
    elif isinstance(exc, KeycloakAuthenticationError) or code == HTTP_UNAUTHORIZED:
        ja = (
            "Keycloak が管理者の認証を拒否しました。KEYCLOAK_ADMIN_CLIENT_ID / "
            "KEYCLOAK_ADMIN_CLIENT_SECRET(または KEYCLOAK_ADMIN_USERNAME / PASSWORD)を確認してください。"
        )
        en = f"Keycloak rejected the admin credentials ({detail}): check KEYCLOAK_ADMIN_* settings."
    elif code == HTTP_BAD_REQUEST and step == "list realm roles":
        # The token request is made lazily by the first call: a 400 there is a
        # refused grant (public client, service accounts disabled, ...).
        ja = "Keycloak がトークン発行を拒否しました。管理用クライアントの設定を確認してください。"
        en = f"Keycloak refused to issue an admin token ({detail}): check the admin client's settings."
    elif code == HTTP_FORBIDDEN:
        ja = (
            f"レルム {realm} を管理する権限がありません。realm-management の "
            "manage-realm / view-realm / manage-users ロールを付与してください。"
        )
        en = (
            f"The admin account may not manage realm {realm}: grant it realm-management's "
            f"manage-realm, view-realm and manage-users roles ({detail})."
        )
    elif code == HTTP_NOT_FOUND and step == "list realm roles":
        ja = f"レルム {realm} が見つかりません(または KEYCLOAK_URL が Keycloak ではありません)。"
        en = f"Realm {realm} not found, or KEYCLOAK_URL is not a Keycloak server ({detail})."
    else:
        status = f"HTTP {code}" if code else type(exc).__name__
        ja = f"Keycloak の API 呼び出しに失敗しました({step}, {status})。"
        en = f"Keycloak API call failed: {step}: {status}: {detail}"
    return KeycloakSyncError(message_ja=ja, message_en=en, step=step)


class _Sync:
    """One run of :func:`keycloak_sync`; every Keycloak call goes through :meth:`call`."""

    def __init__(self, admin: KeycloakAdminAPI, report: SyncReport) -> None:
        self.admin = admin
        self.report = report

    def call(self, step: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeycloakError as exc:
            raise explain_keycloak_error(exc, step=step, realm=self.report.realm) from exc
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # python-keycloak raises these when the body is not the JSON it expects.
            raise unexpected_response_error(exc, step=step) from exc

    def roles(self) -> None:
        report = self.report
        existing = {
            r["name"]: r
            for r in self.call("list realm roles", self.admin.get_realm_roles, brief_representation=True)
        }
        report.legacy_roles = sorted(set(existing) & (set(Role.values) - PLATFORM_ROLES))
        for role in REALM_ROLES:
            description = role_description(role)
            current = existing.get(role.value)
            if current is None:
                if not report.dry_run:
                    payload = {"name": role.value, "description": description}
                    self.call(f"create role {role.value}", self.admin.create_realm_role, payload)
                report.created_roles.append(role.value)
            elif (current.get("description") or "") != description:
                if not report.dry_run:
                    payload = {"name": role.value, "description": description}
                    self.call(f"update role {role.value}", self.admin.update_realm_role, role.value, payload)
                report.updated_roles.append(role.value)
            else:
                report.existing_roles.append(role.value)

    def top_group(self) -> str | None:
        """Id of ``/ministries``, created if missing (``None`` in a dry run that would create it)."""
        path = f"/{MINISTRIES_GROUP}"
        group: dict[str, Any] | None
        try:
            group = self.call(f"find group {path}", self.admin.get_group_by_path, path)
        except KeycloakSyncError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, KeycloakError) and cause.response_code == HTTP_NOT_FOUND):
                raise
            group = None
        if group is not None:
            self.report.existing_groups.append(path)
            return str(group["id"])
        self.report.created_groups.append(path)
        if self.report.dry_run:
            return None
        group_id = self.call(f"create group {path}", self.admin.create_group, {"name": MINISTRIES_GROUP})
        if not group_id:  # created concurrently: look it up
            group_id = self.call(f"find group {path}", self.admin.get_group_by_path, path)["id"]
        return str(group_id)

    def role_groups(self, ministry_path: str, ministry_id: str | None) -> None:
        """Ensure the role subgroups of a ministry group (``ministry_id`` None: not created yet)."""
        existing: set[str] = set()
        if ministry_id is not None:
            children = self.call(
                f"list subgroups of {ministry_path}", self.admin.get_group_children, ministry_id
            )
            existing = {str(child["name"]) for child in children}
        for name in ROLE_SUBGROUPS:
            path = f"{ministry_path}/{name}"
            if name in existing:
                self.report.existing_groups.append(path)
                continue
            if not self.report.dry_run:
                self.call(f"create group {path}", self.admin.create_group, {"name": name}, parent=ministry_id)
            self.report.created_groups.append(path)

    def ministry_groups(self, top_id: str | None, active: dict[str, Ministry], prune: bool) -> None:
        report = self.report
        children: list[dict[str, Any]] = []
        if top_id is not None:
            children = self.call(
                f"list subgroups of /{MINISTRIES_GROUP}",
                self.admin.get_group_children,
                top_id,
                query={"briefRepresentation": False},
            )
        by_name = {str(child["name"]): child for child in children}
        for code, ministry in active.items():
            path = f"{MINISTRY_GROUP_PREFIX}{code}"
            wanted = _ministry_attributes(ministry)
            child = by_name.get(code)
            if child is None:
                group_id: str | None = None
                if not report.dry_run:
                    payload = {"name": code, "attributes": wanted}
                    created = self.call(
                        f"create group {path}", self.admin.create_group, payload, parent=top_id
                    )
                    group_id = str(
                        created or self.call(f"find group {path}", self.admin.get_group_by_path, path)["id"]
                    )
                report.created_groups.append(path)
                self.role_groups(path, group_id)
                continue
            attributes = dict(child.get("attributes") or {})
            if all(attributes.get(k) == v for k, v in wanted.items()):
                report.existing_groups.append(path)
            else:
                if not report.dry_run:
                    # PUT replaces all attributes: keep the ones we don't own.
                    payload = {"name": code, "attributes": {**attributes, **wanted}}
                    self.call(f"update group {path}", self.admin.update_group, str(child["id"]), payload)
                report.updated_groups.append(path)
            self.role_groups(path, str(child["id"]))
        for name, child in sorted(by_name.items()):
            if name in active:
                continue
            path = str(child.get("path") or f"{MINISTRY_GROUP_PREFIX}{name}")
            report.orphaned_groups.append(path)
            if prune:
                if not report.dry_run:
                    self.call(f"delete group {path}", self.admin.delete_group, str(child["id"]))
                report.deleted_groups.append(path)


def keycloak_sync(
    *,
    admin: KeycloakAdminAPI,
    ministries: Iterable[Ministry],
    dry_run: bool = False,
    prune: bool = False,
) -> SyncReport:
    """Make Keycloak's platform realm roles and ministry (role) groups match our data.

    Idempotent: a second run creates nothing. Ministry subgroups with no active
    ministry are reported as ``orphaned_groups`` and deleted only with
    ``prune``. With ``dry_run`` nothing is written; the report says what would be.

    Security: deleting a group (``prune``) removes every member from it, so those
    users lose that ministry at their next login.

    Raises :class:`KeycloakSyncError` (Japanese + English message) when a
    Keycloak call fails: bad URL, credentials, permissions or realm. Needs the
    realm-management roles ``manage-realm`` (realm roles) and ``manage-users``
    (groups: Keycloak files group administration under users), plus ``view-realm``.
    """
    realm = str(admin.get_current_realm() or "")
    report = SyncReport(realm=realm, dry_run=dry_run, prune=prune)
    active = {m.code: m for m in sorted(ministries, key=lambda m: m.code) if m.active}
    sync = _Sync(admin, report)
    sync.roles()
    top_id = sync.top_group()
    sync.ministry_groups(top_id, active, prune)
    return report
