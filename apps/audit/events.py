"""Audit events that are not the side effect of one service: sign-ins and sign-outs,
reads of documents, and refusals of API keys.

Everything here appends to the same hash chain through
:func:`apps.audit.services.audit_record`. The receivers are connected in
:meth:`apps.audit.apps.AuditConfig.ready`, so every login path (OIDC code flow,
the test client's ``force_login``, the admin site) and every logout path
(RP-initiated, a refused claims re-check) is recorded without each caller
remembering to do it. The back-channel logout ends sessions without a request,
so it calls :func:`audit_logout_backchannel` itself.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db.models.signals import post_delete, post_save, pre_save
from django.http import HttpRequest

from apps.tenancy.models import Membership

from .services import audit_record

#: Login/logout events are written once per ministry the user belongs to, so each
#: ministry's admins and exports see the sessions of their own members.
LOGIN = "accounts.login"
LOGOUT = "accounts.logout"
DOCUMENT_DOWNLOAD = "documents.download"
DOCUMENT_PASSAGE_VIEW = "documents.passage_view"
API_KEY_REFUSED = "gateway.api_key.refused"

#: One refusal event per key and state per process in this window: a client
#: retrying an expired key in a loop must not turn the audit chain (one
#: serialised append each) into a denial-of-service lever.
API_KEY_REFUSAL_WINDOW_SECONDS = 300.0


def _ministry_ids(user: Any) -> list[int | None]:
    ids = list(
        Membership.objects.filter(user_id=user.pk)
        .order_by("ministry_id")
        .values_list("ministry_id", flat=True)
    )
    return list(ids) or [None]


def _client(request: HttpRequest | None) -> dict[str, str]:
    if request is None:
        return {}
    return {
        "ip": str(request.META.get("REMOTE_ADDR", ""))[:64],
        "user_agent": str(request.META.get("HTTP_USER_AGENT", ""))[:200],
    }


def audit_login(*, user: Any, request: HttpRequest | None) -> None:
    """A user signed in: one event per ministry they are a member of."""
    for ministry_id in _ministry_ids(user):
        audit_record(
            actor=user,
            action=LOGIN,
            target_type="user",
            target_id=user.pk,
            ministry_id=ministry_id,
            data=_client(request),
        )


def audit_logout(*, user: Any, request: HttpRequest | None, via: str) -> None:
    """A user's session ended (``via``: ``user``, ``backchannel``)."""
    for ministry_id in _ministry_ids(user):
        audit_record(
            actor=user,
            action=LOGOUT,
            target_type="user",
            target_id=user.pk,
            ministry_id=ministry_id,
            data={"via": via, **_client(request)},
        )


def audit_logout_backchannel(*, user: Any, sid: str) -> None:
    """The identity provider ended one of ``user``'s sessions (OIDC back-channel logout)."""
    for ministry_id in _ministry_ids(user):
        audit_record(
            actor=None,
            action=LOGOUT,
            target_type="user",
            target_id=user.pk,
            ministry_id=ministry_id,
            data={"via": "backchannel", "sid": sid[:100], "user": user.username},
        )


def _on_login(sender: Any, request: HttpRequest | None = None, user: Any = None, **_: Any) -> None:
    if user is not None and getattr(user, "pk", None):
        audit_login(user=user, request=request)


def _on_logout(sender: Any, request: HttpRequest | None = None, user: Any = None, **_: Any) -> None:
    # ``user`` is None when the session was anonymous: nothing ended.
    if user is not None and getattr(user, "pk", None):
        audit_logout(user=user, request=request, via="user")


MEMBERSHIP_CREATE = "membership.create"
MEMBERSHIP_ROLES_CHANGE = "membership.roles_change"
MEMBERSHIP_REMOVE = "membership.remove"


def _membership_before(sender: Any, instance: Membership, raw: bool = False, **_: Any) -> None:
    # The roles as stored, read before the save overwrites them (None: a new row).
    if raw:
        return
    stored = None
    if instance.pk is not None:
        stored = Membership.objects.filter(pk=instance.pk).values_list("roles", flat=True).first()
    instance._audit_roles_before = None if stored is None else sorted(stored)  # type: ignore[attr-defined]


def _membership_saved(sender: Any, instance: Membership, created: bool, raw: bool = False, **_: Any) -> None:
    """Security: every grant and every change of a ministry role is on the chain.

    Memberships change at login and at each claims re-check (identity provider),
    and through any other ORM path (admin site, a console grant); a receiver
    catches them all. The login path re-saves unchanged memberships on every
    sign-in: those are not events.
    """
    if raw:
        return
    before = getattr(instance, "_audit_roles_before", None)
    after = sorted(instance.roles)
    if not created and before == after:
        return
    audit_record(
        actor=None,
        action=MEMBERSHIP_CREATE if created or before is None else MEMBERSHIP_ROLES_CHANGE,
        target_type="membership",
        target_id=instance.pk,
        ministry_id=instance.ministry_id,
        data={"user_id": instance.user_id, "roles_before": before or [], "roles_after": after},
    )


def _membership_deleted(sender: Any, instance: Membership, **_: Any) -> None:
    audit_record(
        actor=None,
        action=MEMBERSHIP_REMOVE,
        target_type="membership",
        target_id=instance.pk,
        ministry_id=instance.ministry_id,
        data={"user_id": instance.user_id, "roles_before": sorted(instance.roles), "roles_after": []},
    )


def connect() -> None:
    user_logged_in.connect(_on_login, dispatch_uid="gennai.audit.login")
    user_logged_out.connect(_on_logout, dispatch_uid="gennai.audit.logout")
    pre_save.connect(_membership_before, sender=Membership, dispatch_uid="gennai.audit.membership_pre")
    post_save.connect(_membership_saved, sender=Membership, dispatch_uid="gennai.audit.membership_saved")
    post_delete.connect(
        _membership_deleted, sender=Membership, dispatch_uid="gennai.audit.membership_deleted"
    )


def audit_document_access(
    *, actor: Any, document: Any, action: str, data: dict[str, Any] | None = None
) -> None:
    """A person read a document's content: the original file or a cited passage.

    Runs in the request's ministry scope; the event carries the document's own
    ministry, so it shows in that ministry's audit trail and exports.
    """
    audit_record(
        actor=actor,
        action=action,
        target_type="document",
        target_id=document.pk,
        ministry_id=document.ministry_id,
        data={"workspace_id": document.workspace_id, "filename": document.filename, **(data or {})},
    )


class _RefusalThrottle:
    """Per process: when each (key, state) refusal was last written."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[tuple[int, str], float] = {}

    def due(self, key_id: int, state: str) -> bool:
        now = time.monotonic()
        with self.lock:
            seen = self.last.get((key_id, state))
            if seen is not None and now - seen < API_KEY_REFUSAL_WINDOW_SECONDS:
                return False
            if len(self.last) > 10_000:  # bounded: forget everything rather than grow
                self.last.clear()
            self.last[(key_id, state)] = now
            return True


_refusals = _RefusalThrottle()


def api_key_refusal_due(*, key_id: int, state: str) -> bool:
    """Whether a refusal of ``key_id`` for ``state`` should be written now (see the window)."""
    return _refusals.due(key_id, state)


def audit_api_key_refused(*, key_id: int, ministry_id: int, prefix: str, state: str) -> None:
    """A request presented a real key (right secret) that is expired or revoked.

    Security: written only after the secret matched, so nobody without the key
    can create these events; throttled by :func:`api_key_refusal_due`.
    """
    audit_record(
        actor=None,
        action=API_KEY_REFUSED,
        target_type="api_key",
        target_id=key_id,
        ministry_id=ministry_id,
        data={"state": state, "prefix": prefix},
    )


def reset_for_tests() -> None:
    with _refusals.lock:
        _refusals.last.clear()
