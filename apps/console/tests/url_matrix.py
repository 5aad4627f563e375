"""What every console URL should answer, per role and method: the table ``test_url_walk`` reads.

``test_url_walk`` enumerates every URL pattern of the ``console`` namespace (so a
new URL is walked without anyone listing it) and requests it as each role of
two ministries, with the ids of ministry A's objects. What it expects comes from
the default rules in :func:`expected_status`, refined per URL by :data:`URL_SPECS`.

To cover a new console URL, add a :class:`UrlSpec` to :data:`URL_SPECS` (its
methods, whether its GET is a change form, a POST payload that really changes
A's data as A's admin), and, for a new id in the path, a factory in
:data:`OBJECT_FACTORIES` that creates A's object and returns its id. A URL with
an id the table does not know fails the walk with a message saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.utils import timezone

from tests.support.fixtures import make_user

BASE_ROLES = ("anonymous", "staff_a", "auditor_a", "auditor_b", "admin_b")

EXTRA_USERS: dict[str, tuple[str, list[str]]] = {}
"""More roles for the walk: name → (``"a"`` or ``"b"``, membership roles), e.g.
``EXTRA_USERS["platform_admin_a"] = ("a", ["staff", "platform_admin"])``. Unless a
:class:`UrlSpec` says otherwise (``expect={"platform_admin_a": 200}``), an extra
role is expected to get 403 from every console page that takes its method."""


def roles() -> tuple[str, ...]:
    """Every role the walk uses, admin_a last (its POSTs change A's data)."""
    return (*BASE_ROLES, *EXTRA_USERS, "admin_a")


LOGIN_REDIRECT = 302
ANY = -1
"""An expected status meaning "whatever, as long as ministry A's data did not change"."""

MARKER = "WALKMARK"
"""Appears in ministry A's names only: a page shown to B must not contain it."""


@dataclass
class World:
    """Two ministries, a user per role, and ministry A's objects (ids by URL keyword)."""

    a: Any
    b: Any
    users: dict[str, Any]
    ids: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def build_world(ministries: tuple[Any, Any]) -> World:
    """Create the roles of both ministries and A's objects (through the real services)."""
    from apps.gateway.services import api_key_create
    from apps.quotas.limits import limit_set
    from apps.registry.models import Alias
    from apps.registry.services import alias_grant
    from apps.tenancy.models import Team, TeamMembership, TeamSource
    from apps.tenancy.scope import ministry_scope

    a, b = ministries
    users = {
        "staff_a": make_user("walk-staff-a", a, ["staff"]),
        "auditor_a": make_user("walk-auditor-a", a, ["staff", "ministry_auditor"]),
        "admin_a": make_user("walk-admin-a", a, ["staff", "ministry_admin"]),
        "auditor_b": make_user("walk-auditor-b", b, ["staff", "ministry_auditor"]),
        "admin_b": make_user("walk-admin-b", b, ["staff", "ministry_admin"]),
        "member_a": make_user(f"walk-member-a-{MARKER}", a, ["staff"]),
    }
    for role, (which, membership_roles) in EXTRA_USERS.items():
        users[role] = make_user(f"walk-{role}", a if which == "a" else b, membership_roles)
    world = World(a=a, b=b, users=users)
    granted = Alias.objects.create(name="walk-granted", display_name_ja="許可済み", display_name_en="Granted")
    free = Alias.objects.create(name="walk-free", display_name_ja="未許可", display_name_en="Not granted")
    alias_grant(actor=None, ministry=a, alias=granted)
    alias_grant(actor=None, ministry=b, alias=granted)
    world.extra.update(alias_granted=granted.pk, alias_free=free.pk)
    with ministry_scope(ministry_id=a.pk):
        team = Team.objects.create(code="walk-local", name=f"{MARKER} ローカル", source=TeamSource.LOCAL)
        Team.objects.create(code="walk-sso", name=f"{MARKER} SSO", source=TeamSource.SSO)
        row = TeamMembership.objects.create(team=team, user=users["member_a"], source=TeamSource.LOCAL)
        limit = limit_set(actor=users["admin_a"], level="team", team=team, monthly_tokens=100_000)
        key, _plain = api_key_create(
            actor=users["admin_a"],
            ministry=a,
            name=f"{MARKER} key",
            expires_at=timezone.now() + timedelta(days=30),
        )
    world.ids.update(
        user_id=users["member_a"].pk,
        team_id=team.pk,
        team_membership_id=row.pk,
        limit_id=limit.pk,
        alias_id=granted.pk,
    )
    world.extra["api_key"] = key.pk
    for name, factory in OBJECT_FACTORIES.items():
        with ministry_scope(ministry_id=a.pk):
            world.ids[name] = factory(world)
    return world


def _announcement(world: World) -> int:
    from apps.console.models import Announcement

    return int(Announcement.objects.create(ministry=world.a, title=f"{MARKER} 連絡", body="本文").pk)


def _local_grant(world: World) -> int:
    """Ministry A allows local grants (the walk's POSTs grant and revoke for real); A's member holds one."""
    from apps.accounts.models import LocalGrantPolicy, LocalRoleGrant

    LocalGrantPolicy.objects.create(ministry=world.a, enabled=True)
    grant = LocalRoleGrant.objects.create(
        ministry=world.a,
        user=world.users["member_a"],
        role="procurement_officer",
        expires_at=timezone.now() + timedelta(days=7),
        granted_by=world.users["admin_a"],
    )
    return int(grant.pk)


OBJECT_FACTORIES: dict[str, Callable[[World], int]] = {
    "announcement_id": _announcement,
    "grant_id": _local_grant,
}
"""URL keyword → factory of ministry A's object (runs in A's scope; returns the id)."""

PLATFORM_KWARGS = frozenset({"alias_id"})
"""Ids of platform data (not ministry A's): another ministry's admin may name them too."""


@dataclass(frozen=True)
class UrlSpec:
    """How one console URL behaves.

    * ``methods``: what it answers (others: 405 for everyone);
    * ``write``: its GET is a change form (auditors get 403, as on POST);
    * ``post``: the POST body as A's admin would send it (built from the world);
      A's admin must get ``admin_post`` and A's data must change (so the refusals
      of everyone else are refusals of a real change);
    * ``kwargs``: path keywords when they are not the world's defaults;
    * ``expect``: overrides of the defaults, keyed by ``(method, role)`` or by ``role``
      (both methods); ``(method, role)`` wins.
    """

    methods: frozenset[str] = frozenset({"GET"})
    write: bool = False
    post: Callable[[World], dict[str, Any]] | None = None
    admin_post: int = 302
    kwargs: Callable[[World], dict[str, Any]] | None = None
    expect: dict[tuple[str, str] | str, int] = field(default_factory=dict)


GET = frozenset({"GET"})
POST = frozenset({"POST"})
BOTH = frozenset({"GET", "POST"})


# Platform roles (realm roles, copied into the membership of their home ministry).
EXTRA_USERS["platform_auditor_a"] = ("a", ["staff", "auditor"])
EXTRA_USERS["platform_admin_b"] = ("b", ["staff", "platform_admin"])
PLATFORM_ROLES = ("platform_auditor_a", "platform_admin_b")


def _refused_to_ministry_roles(methods: frozenset[str]) -> dict[tuple[str, str] | str, int]:
    """Every ministry role of the walk gets 403; the platform roles read (GET 200)."""
    expect: dict[tuple[str, str] | str, int] = {
        (m, r): 403 for m in methods for r in (*BASE_ROLES, "admin_a") if r != "anonymous"
    }
    expect.update({("GET", r): 200 for r in PLATFORM_ROLES})
    return expect


def _platform_reads(**extra: int) -> dict[tuple[str, str] | str, int]:
    """The audit pages: platform roles read (their own ministry by default) like ministry auditors."""
    expect: dict[tuple[str, str] | str, int] = {("GET", r): 200 for r in PLATFORM_ROLES}
    expect.update({("POST", r): v for r, v in extra.items()})
    return expect


URL_SPECS: dict[str, UrlSpec] = {
    # Staff read their ministry's announcements: not a console page, but in the namespace.
    "announcement_detail": UrlSpec(
        expect={("GET", "staff_a"): 200, ("GET", "platform_auditor_a"): 200, ("GET", "platform_admin_b"): 404}
    ),
    "home": UrlSpec(),
    "member_list": UrlSpec(),
    "member_detail": UrlSpec(),
    # Local role grants (policy on in A): A's admin grants A's member a role / revokes A's grant;
    # B's admin naming A's member or grant gets 404, auditors 403, nothing changes.
    "member_grant_create": UrlSpec(
        methods=POST,
        post=lambda w: {
            "role": "ministry_auditor",
            "expires_on": (timezone.localdate() + timedelta(days=10)).isoformat(),
        },
    ),
    "member_grant_revoke": UrlSpec(methods=POST, post=lambda w: {}),
    "team_list": UrlSpec(),
    "team_create": UrlSpec(methods=BOTH, write=True, post=lambda w: {"code": "walk-new", "name": "新チーム"}),
    "team_detail": UrlSpec(),
    "team_rename": UrlSpec(methods=POST, post=lambda w: {"name": "改名したチーム"}),
    "team_delete": UrlSpec(methods=BOTH, write=True, post=lambda w: {}),
    "team_member_add": UrlSpec(methods=POST, post=lambda w: {"user": w.users["staff_a"].pk}),
    "team_member_remove": UrlSpec(methods=POST, post=lambda w: {}),
    "model_list": UrlSpec(),
    "model_allow": UrlSpec(
        methods=POST,
        post=lambda w: {},
        kwargs=lambda w: {"alias_id": w.extra["alias_free"]},
    ),
    "model_disallow": UrlSpec(
        methods=POST,
        post=lambda w: {},
        kwargs=lambda w: {"alias_id": w.extra["alias_granted"]},
    ),
    "limit_list": UrlSpec(),
    "limit_create": UrlSpec(
        methods=BOTH,
        write=True,
        # B's admin posting A's team id: refused by the form's choices (400), nothing changes.
        post=lambda w: {"level": "user", "user": w.users["member_a"].pk, "monthly_tokens": "5000"},
    ),
    "limit_edit": UrlSpec(methods=BOTH, write=True, post=lambda w: {"monthly_tokens": "7", "rpm": "3"}),
    "limit_delete": UrlSpec(methods=BOTH, write=True, post=lambda w: {}),
    "retention": UrlSpec(methods=BOTH, post=lambda w: {"days": "90"}),
    # Insight pages (urls_insight.py). Usage and audit read the caller's own ministry only (B's
    # roles get 200 with B's data, never A's); the exports are audited reads (READ_RECORDS).
    "usage": UrlSpec(),
    "usage_csv": UrlSpec(),
    "audit_list": UrlSpec(expect=_platform_reads()),
    "audit_export": UrlSpec(expect=_platform_reads()),
    # Platform pages: no ministry role reaches them; platform auditors read, platform admins
    # also change the platform budget (more in test_insight_platform.py).
    "platform_ministries": UrlSpec(expect=_refused_to_ministry_roles(GET)),
    "platform_usage": UrlSpec(expect=_refused_to_ministry_roles(GET)),
    "platform_budget": UrlSpec(
        methods=BOTH,
        expect=_refused_to_ministry_roles(BOTH) | {("POST", "platform_admin_b"): 302},
    ),
    # Ministry A's local-grant policy (A has an override and a grant): every ministry role gets
    # 403 before the ministry is looked up, the platform auditor reads (own ministry), B's
    # platform admin reads it as an audited cross-ministry read (READ_RECORDS). The walk POSTs
    # an empty form (400, nothing changes): a platform admin's real change of A's policy would
    # break the walk's rule that only A's admin changes A, so it is tested in
    # test_platform_local_grants.py (also the 404 of an unknown ministry).
    "platform_local_grants": UrlSpec(
        methods=BOTH,
        kwargs=lambda w: {"ministry_id": w.a.pk},
        expect=_refused_to_ministry_roles(BOTH) | {("POST", "platform_admin_b"): 400},
    ),
}

READ_RECORDS = frozenset(
    {
        "usage.export",
        "audit.export",
        "audit.cross_ministry_read",
        "usage.cross_ministry_read",
        "tenancy.cross_ministry_read",
    }
)
"""Audit actions that record a read (not a change of ministry A's data)."""


def touches_a_object(spec: UrlSpec, kwargs: dict[str, Any]) -> bool:
    """Does the path name one of ministry A's objects (so another ministry must get 404)?"""
    return any(name not in PLATFORM_KWARGS for name in kwargs)


def expected_status(spec: UrlSpec, *, method: str, role: str, a_object: bool) -> int:
    """The default rules (see the module docstring); ``spec.expect`` overrides them."""
    for key in ((method, role), role):
        if key in spec.expect:
            return spec.expect[key]
    if method not in spec.methods:
        return 405
    if role == "anonymous":
        return LOGIN_REDIRECT
    if role == "staff_a" or role in EXTRA_USERS:
        return 403
    changing = method == "POST" or spec.write
    if role in ("auditor_a", "auditor_b") and changing:
        return 403  # read-only, refused before any object is looked up
    if role in ("auditor_b", "admin_b"):
        if a_object:
            return 404  # another ministry's object: the same 404 as a missing one
        return ANY if method == "POST" else 200
    if role == "admin_a" and method == "POST":
        return spec.admin_post
    return 200
