"""Demo identities shared by the dev IdP and the application's seed command.

This module is the single source of truth for demo ministries and users. It is
plain Python on purpose (no Django imports) so that any process can import it.
"""

# ruff: noqa: E501
from __future__ import annotations

import uuid
from typing import Any

# The data below is kept one entry per line on purpose (easy to diff and grep).
# fmt: off
MINISTRIES = [
    {"code": "digital", "name_ja": "デジタル庁", "name_en": "Digital Agency"},
    {"code": "soumu", "name_ja": "総務省", "name_en": "Ministry of Internal Affairs and Communications"},
]
DEMO_PASSWORD = "gennai-demo"  # noqa: S105  (public demo password, dev IdP only)
# "roles": ministry code → roles in that ministry (they become the Keycloak groups
# /ministries/<code>, /ministries/<code>/admins, …/procurement, …/auditors); the
# key "platform" holds platform-wide realm roles. "ministries" lists the codes.
# "teams" (optional): ministry code → team slugs (the groups /ministries/<code>/teams/<slug>).
DEMO_USERS: list[dict[str, Any]] = [
    {"username": "tanaka", "name": "田中 花子", "email": "tanaka@digital.example.go.jp", "ministries": ["digital"], "roles": {"digital": ["staff"]}, "teams": {"digital": ["planning"]}},
    {"username": "sato", "name": "佐藤 健", "email": "sato@digital.example.go.jp", "ministries": ["digital"], "roles": {"digital": ["staff", "ministry_admin"]}},
    {"username": "takahashi", "name": "高橋 誠", "email": "takahashi@digital.example.go.jp", "ministries": ["digital"], "roles": {"digital": ["staff", "procurement_officer"]}},
    {"username": "suzuki", "name": "鈴木 一郎", "email": "suzuki@soumu.example.go.jp", "ministries": ["soumu"], "roles": {"soumu": ["staff"]}},
    {"username": "ito", "name": "伊藤 美咲", "email": "ito@soumu.example.go.jp", "ministries": ["soumu"], "roles": {"soumu": ["staff", "ministry_admin"]}},
    {"username": "watanabe", "name": "渡辺 翔", "email": "watanabe@digital.example.go.jp", "ministries": ["digital", "soumu"], "roles": {"digital": ["staff"], "soumu": ["staff"]}},
    {"username": "yamada", "name": "山田 太郎", "email": "yamada@digital.example.go.jp", "ministries": ["digital", "soumu"], "roles": {"digital": ["staff", "ministry_admin"], "soumu": ["staff"]}},
    {"username": "admin", "name": "プラットフォーム管理者", "email": "admin@platform.example.go.jp", "ministries": ["digital"], "roles": {"digital": ["staff"], "platform": ["platform_admin", "auditor"]}},
]
# fmt: on

#: Namespace for deterministic demo subjects (``sub`` claims). Fixed forever so
#: that a re-created IdP database hands out the same ``sub`` for each demo user.
DEMO_SUBJECT_NAMESPACE = uuid.UUID("6f1d3c2a-9b4e-5c7d-8e2f-0a1b2c3d4e5f")


def ministry_group(code: str) -> str:
    """Return the Keycloak group path for a ministry code (``/ministries/<code>``)."""
    return f"/ministries/{code}"


#: Ministry role → the subgroup of ``/ministries/<code>`` that grants it (staff: the group itself).
ROLE_SUBGROUP = {
    "ministry_admin": "admins",
    "procurement_officer": "procurement",
    "ministry_auditor": "auditors",
}
#: Key of ``roles`` that holds platform-wide realm roles.
PLATFORM = "platform"


def demo_groups(roles: dict[str, list[str]], teams: dict[str, list[str]] | None = None) -> list[str]:
    """Return the ``groups`` claim (Keycloak full paths) for per-ministry roles and teams."""
    groups: list[str] = []
    for code, ministry_roles in roles.items():
        if code == PLATFORM:
            continue
        for role in ministry_roles:
            sub = ROLE_SUBGROUP.get(role)
            groups.append(f"{ministry_group(code)}/{sub}" if sub else ministry_group(code))
    for code, slugs in (teams or {}).items():
        groups.extend(f"{ministry_group(code)}/teams/{slug}" for slug in slugs)
    return list(dict.fromkeys(groups))


def demo_realm_roles(roles: dict[str, list[str]]) -> list[str]:
    """Return the platform-wide realm roles (``realm_access.roles``) of a demo user."""
    return list(roles.get(PLATFORM, []))


def demo_subject(username: str) -> str:
    """Return the stable ``sub`` (a UUIDv5 string) the dev IdP uses for a demo user."""
    return str(uuid.uuid5(DEMO_SUBJECT_NAMESPACE, username))


def get_demo_user(username: str) -> dict[str, Any] | None:
    """Return the demo user entry for ``username`` or ``None``."""
    for entry in DEMO_USERS:
        if entry["username"] == username:
            return entry
    return None
