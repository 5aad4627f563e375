"""Who is calling ``/v1``, and at which 機密性 (confidentiality level).

Two kinds of caller:

* an **API key** (``Authorization: Bearer gn-…``), judged by the key alone from
  the in-process key cache of :mod:`apps.gateway.keys` — no database round trip
  while the cache is fresh; a request that presents a key never falls back to
  the browser session, even when the key is wrong;
* a signed-in **browser session** (no ``Authorization`` header). Those requests
  are served by Django (session and CSRF middleware); see :mod:`apps.gateway.asgi`.

The confidentiality level comes from the ``X-Gennai-Confidentiality`` header.
Without it, a request is taken to be at the highest level its caller may use:
an API key's own maximum (the key was issued for that level), and 機密性3 for a
browser session. The platform never assumes 機密性1 for a person who may be
pasting 機密性3 text (fail closed): such a request reaches only deployments
cleared for 3, and the refusal explains how to declare a lower level.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from apps.audit.events import api_key_refusal_due, audit_api_key_refused
from apps.tenancy.connections import db_hop

from . import errors, keys
from .models import KEY_PREFIX

LEVEL_HEADER = "X-Gennai-Confidentiality"
CONVERSATION_HEADER = "X-Gennai-Conversation"
SESSION_MAX_LEVEL = 3
_LEVELS = {"1": 1, "2": 2, "3": 3}


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: an API key, or a signed-in member of a ministry.

    ``default_level`` is the level assumed when the request declares none: the
    highest the caller may use (fail closed).
    """

    ministry_id: int
    api_key_id: int | None
    user_id: int | None
    allowed_aliases: frozenset[str]  # empty: everything the ministry allows
    max_level: int
    default_level: int


async def caller_from_bearer(authorization: str) -> Caller:
    """The caller of an ``Authorization`` header value, or an :class:`ApiError` (401).

    Security: the key is compared by hash in constant time on every request
    (:func:`keys.check_key`), revoked and expired keys and keys of deactivated
    ministries are refused, and only a stale cache entry costs a database hop
    (in a worker thread, never on the event loop).
    """
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.missing_key()
    info = keys.cached_key(token)
    if info is None:
        info = await db_hop(keys.lookup_key, token)
    state = keys.check_key(info, token)
    if info is not None and state in (keys.KeyState.REVOKED, keys.KeyState.EXPIRED):
        # The secret matched: a real key in use after its end. Audited (throttled per key).
        if api_key_refusal_due(key_id=info.id, state=state):
            await db_hop(
                audit_api_key_refused,
                key_id=info.id,
                ministry_id=info.ministry_id,
                prefix=KEY_PREFIX + info.prefix,
                state=state,
            )
    if state == keys.KeyState.REVOKED:
        raise errors.revoked_key()
    if state == keys.KeyState.EXPIRED:
        raise errors.expired_key()
    if state != keys.KeyState.VALID or info is None:
        raise errors.invalid_key()
    return Caller(
        ministry_id=info.ministry_id,
        api_key_id=info.id,
        user_id=None,
        allowed_aliases=info.allowed_aliases,
        max_level=info.max_level,
        default_level=info.max_level,
    )


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> str:
        return reason


def _csrf_failed(request: HttpRequest) -> bool:
    check = _CsrfCheck(lambda _request: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda _r: HttpResponse(), (), {}) is not None


def caller_from_session(request: HttpRequest) -> Caller:
    """The caller of a Django request without an API key: its session's membership.

    Security: the ministry comes only from the membership that the tenancy
    middleware resolved from identity-provider claims. Session requests that
    change something must pass Django's CSRF check (the view is CSRF-exempt for
    bearer clients). Undeclared, a session's requests are 機密性3 (fail closed).
    """
    membership = getattr(request, "membership", None)
    if membership is None:
        raise errors.missing_key()
    if request.method not in ("GET", "HEAD", "OPTIONS") and _csrf_failed(request):
        raise errors.csrf_failed()
    return Caller(
        ministry_id=membership.ministry_id,
        api_key_id=None,
        user_id=membership.user_id,
        allowed_aliases=frozenset(),
        max_level=SESSION_MAX_LEVEL,
        default_level=SESSION_MAX_LEVEL,
    )


def requested_level(raw: str | None, caller: Caller) -> int:
    """The request's 機密性: the header (exactly ``1``–``3``), else the caller's default.

    Security: an unparsable header is a 400, never a silent default; without
    the header the caller's highest level applies (see the module docstring).
    """
    if raw is None:
        return caller.default_level
    level = _LEVELS.get(raw.strip())
    if level is None:
        raise errors.invalid_level(LEVEL_HEADER)
    return level
