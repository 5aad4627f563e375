"""Reads of apps, runs and favourites (always within the active ministry scope).

Security: a :class:`MinistryApp` is visible to its owner, and to the rest of its ministry only
when shared (``visibility=ministry``); the scoped manager and RLS hide other ministries' rows.
Every read by id applies the same filter, so another ministry's app, a colleague's private app
and a missing id are the same 404. Platform apps are visible when approved (built-ins always).
Runs are private to the user who ran them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404

from .models import AppFavourite, AppRun, CatalogueStatus, MinistryApp, PlatformApp, Visibility


def _authenticated(actor: Any) -> bool:
    return bool(getattr(actor, "is_authenticated", False))


def platform_apps() -> QuerySet[PlatformApp]:
    """Built-in and approved catalogue apps."""
    return PlatformApp.objects.filter(status=CatalogueStatus.APPROVED).order_by("position", "id")


def ministry_apps_for_actor(*, actor: Any) -> QuerySet[MinistryApp]:
    """The actor's own apps and the ones shared with the ministry."""
    if not _authenticated(actor):
        return MinistryApp.objects.none()
    return MinistryApp.objects.filter(
        Q(owner_id=actor.pk) | Q(visibility=Visibility.MINISTRY)
    ).select_related("owner")


def get_platform_app(*, platform_app_id: int) -> PlatformApp:
    app = platform_apps().filter(pk=platform_app_id).first()
    if app is None:
        raise Http404
    return app


def get_ministry_app_for_actor(*, actor: Any, app_id: int, editable: bool = False) -> MinistryApp:
    """Ministry app ``app_id`` if visible to the actor (``editable``: owned by the actor), else 404."""
    apps = ministry_apps_for_actor(actor=actor)
    if editable:
        apps = apps.filter(owner_id=actor.pk)
    app = apps.filter(pk=app_id).first()
    if app is None:
        raise Http404
    return app


def get_app_for_actor(*, actor: Any, ref: str) -> PlatformApp | MinistryApp:
    """An app by its reference ``p<id>`` (platform) or ``m<id>`` (ministry), else 404."""
    if len(ref) < 2 or not ref[1:].isdigit() or ref[0] not in "pm":
        raise Http404
    if ref[0] == "p":
        return get_platform_app(platform_app_id=int(ref[1:]))
    return get_ministry_app_for_actor(actor=actor, app_id=int(ref[1:]))


@dataclass(frozen=True)
class CatalogueEntry:
    app: PlatformApp | MinistryApp
    section: str  # builtin | platform | shared | mine
    favourite: bool


def catalogue_for_actor(*, actor: Any) -> list[CatalogueEntry]:
    """Every app the actor may run: built-ins, platform catalogue, shared in the ministry, mine.

    Favourites come first; otherwise in that section order.
    """
    favourites = AppFavourite.objects.filter(user_id=actor.pk)
    fav_platform = set(favourites.exclude(platform_app=None).values_list("platform_app_id", flat=True))
    fav_ministry = set(favourites.exclude(ministry_app=None).values_list("ministry_app_id", flat=True))
    entries: list[CatalogueEntry] = []
    for p in platform_apps():
        entries.append(CatalogueEntry(p, "builtin" if p.builtin else "platform", p.pk in fav_platform))
    for m in ministry_apps_for_actor(actor=actor).order_by("-updated_at", "-id"):
        entries.append(
            CatalogueEntry(m, "mine" if m.owner_id == actor.pk else "shared", m.pk in fav_ministry)
        )
    order = {"builtin": 0, "platform": 1, "shared": 2, "mine": 3}
    return sorted(entries, key=lambda e: (not e.favourite, order[e.section]))


def proposals_pending() -> QuerySet[PlatformApp]:
    """Catalogue proposals waiting for a platform admin (platform-level rows, no tenant read)."""
    return PlatformApp.objects.filter(status=CatalogueStatus.PROPOSED).order_by("created_at", "id")


def run_list_for_actor(*, actor: Any) -> QuerySet[AppRun]:
    if not _authenticated(actor):
        return AppRun.objects.none()
    return AppRun.objects.filter(user_id=actor.pk).select_related("message").order_by("-created_at", "-id")


def get_run_for_actor(*, actor: Any, run_id: int) -> AppRun:
    """The actor's own run ``run_id``, else 404 (missing and not-yours alike)."""
    run = run_list_for_actor(actor=actor).filter(pk=run_id).first()
    if run is None:
        raise Http404
    return run
