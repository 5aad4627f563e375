"""Every console URL, as each role of two ministries (issue 8).

An admin of ministry A gets the pages and changes A; an admin or auditor of B
gets 404 for A's objects, never sees A's names on a list, and changes nothing of
A by POSTing A's ids; A's staff cannot reach the console; A's auditor reads but
cannot change. The URL list is enumerated from the ``console`` namespace, so a
URL added later is walked too; expectations live in :mod:`.url_matrix`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse

from apps.console import urls as console_urls

from .url_matrix import (
    ANY,
    MARKER,
    READ_RECORDS,
    URL_SPECS,
    UrlSpec,
    World,
    build_world,
    expected_status,
    roles,
    touches_a_object,
)


def _patterns(patterns: list[Any], prefix: str = "") -> list[tuple[str, list[str]]]:
    """(name, path keywords) of every named pattern, descending into includes."""
    found: list[tuple[str, list[str]]] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found += _patterns(entry.url_patterns, prefix)
        elif isinstance(entry, URLPattern) and entry.name:
            found.append((entry.name, list(entry.pattern.converters)))
    return found


CONSOLE_URLS = _patterns(console_urls.urlpatterns)


def test_the_walk_sees_the_whole_namespace() -> None:
    """The enumeration is not empty and finds the ministry pages (a broken walk would pass vacuously)."""
    names = {name for name, _ in CONSOLE_URLS}
    assert {"home", "member_detail", "team_member_remove", "limit_edit", "retention"} <= names
    assert len(names) == len(CONSOLE_URLS), "duplicate URL names in the console namespace"


def fingerprint(world: World) -> str:
    """Everything of ministry A a console POST could change, as one comparable string."""
    from apps.accounts.models import LocalGrantPolicy, LocalRoleGrant
    from apps.audit.models import AuditEvent
    from apps.console.models import Announcement
    from apps.documents.models import DocumentRetention
    from apps.gateway.models import ApiKey
    from apps.quotas.budget_models import Limit
    from apps.registry.models import AliasGrant
    from apps.tenancy.models import Membership, Team, TeamMembership
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=world.a.pk):
        state = {
            model.__name__: sorted(map(str, model.objects.values_list()))
            for model in (
                Team,
                TeamMembership,
                AliasGrant,
                Limit,
                DocumentRetention,
                Announcement,
                LocalGrantPolicy,
                LocalRoleGrant,
            )
        }
    state["Membership"] = sorted(map(str, Membership.objects.filter(ministry=world.a).values_list()))
    state["ApiKey"] = sorted(map(str, ApiKey.objects.filter(ministry=world.a).values_list()))
    # Records of reads (an export, a cross-ministry look) are the audit trail doing its job, not a change.
    changes = AuditEvent.objects.filter(ministry=world.a).exclude(action__in=READ_RECORDS)
    state["AuditEvent"] = [str(changes.count())]
    return json.dumps(state, sort_keys=True)


def _body(response: Any) -> str:
    """The response text, also of a streamed one (exports)."""
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode()
    return str(response.content.decode())


def _client(world: World, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


def _url(world: World, name: str, keywords: list[str], spec: UrlSpec) -> tuple[str, bool]:
    kwargs = spec.kwargs(world) if spec.kwargs else {}
    for keyword in keywords:
        if keyword not in kwargs:
            assert keyword in world.ids, (
                f"console URL {name!r} takes <{keyword}>: add a factory of ministry A's object to "
                "apps/console/tests/url_matrix.py OBJECT_FACTORIES (or kwargs= in its UrlSpec)"
            )
            kwargs[keyword] = world.ids[keyword]
    return reverse(f"console:{name}", kwargs=kwargs), touches_a_object(spec, kwargs)


@pytest.mark.parametrize(("name", "keywords"), CONSOLE_URLS, ids=[n for n, _ in CONSOLE_URLS])
def test_console_url_as_every_role(name: str, keywords: list[str], ministries: Any) -> None:
    world = build_world(ministries)
    spec = URL_SPECS.get(name, UrlSpec())
    url, a_object = _url(world, name, keywords, spec)
    payload = spec.post(world) if spec.post else {}
    for role in roles():
        client = _client(world, role)
        for method in ("GET", "POST"):
            before = fingerprint(world)
            response = client.get(url) if method == "GET" else client.post(url, payload)
            want = expected_status(spec, method=method, role=role, a_object=a_object)
            where = f"{method} {url} as {role}"
            assert response.status_code < 500, f"{where}: server error {response.status_code}"
            if want != ANY:
                assert response.status_code == want, f"{where}: {response.status_code}, expected {want}"
            if want == 302 and role == "anonymous":
                assert "/accounts/login/" in response["Location"], where
            if role != "admin_a":
                assert fingerprint(world) == before, f"{where} changed ministry A's data"
            if role in ("admin_b", "auditor_b") and response.status_code == 200:
                assert MARKER not in _body(response), f"{where} shows ministry A's names"
            if role == "admin_a" and method == "POST" and spec.post is not None and "POST" in spec.methods:
                assert fingerprint(world) != before, f"{where} was meant to change ministry A's data"


def test_every_declared_spec_names_a_real_url() -> None:
    """A spec for a URL that no longer exists would silently test nothing."""
    names = {name for name, _ in CONSOLE_URLS}
    assert set(URL_SPECS) <= names, set(URL_SPECS) - names
