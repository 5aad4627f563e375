"""Failed sign-ins on the audit chain, coalesced so nobody can flood the chain with them.

A failed OIDC callback (:class:`apps.accounts.views.CallbackView`) is recorded as
``accounts.login_failed`` with a reason code:

* ``idp_error`` — the IdP sent the browser back with ``?error=`` (its code, if it is a
  plain ``snake_case`` word, in ``idp_error``);
* ``incomplete_callback`` — no ``code`` or ``state``;
* ``no_state`` — the session holds no login in progress (expired session, a replayed callback);
* ``state_mismatch`` — ``state`` is not one this session started (CSRF on the login, replay);
* ``nonce_mismatch`` — the ID token's nonce is not this login's (token replay);
* ``token_rejected`` — the ID token failed verification (signature, issuer, audience, expiry);
* ``token_error`` — the token endpoint refused the code (replayed or expired code);
* ``user_disabled`` — the user is deactivated here;
* ``not_authenticated`` — anything else that did not produce a user.

Security: the event holds the reason, the client address and user agent, and
for ``user_disabled`` the user; never the code, state, nonce, tokens or the
verifier's error text (which could echo attacker input). Anyone on the network
can cause failures, and each append takes the chain's lock, so writes are
coalesced: one event per source address per minute, and at most
``GENNAI_AUDIT_LOGIN_FAILURES_PER_MINUTE`` (default 60) events per minute in
all. Failures not written are counted per address (shared cache) and the next
event written for that address carries the count (``coalesced_before``), so the
volume is still on the chain.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from .services import audit_record

logger = logging.getLogger("gennai.audit")

LOGIN_FAILED = "accounts.login_failed"
REASONS = frozenset(
    {
        "idp_error",
        "incomplete_callback",
        "no_state",
        "state_mismatch",
        "nonce_mismatch",
        "token_rejected",
        "token_error",
        "user_disabled",
        "not_authenticated",
    }
)
WINDOW_SECONDS = 60
DEFAULT_PER_MINUTE = 60
_IDP_ERROR = re.compile(r"^[a-z_]{1,40}\Z")
#: How long an address's count of failures not written waits for its next event.
PENDING_SECONDS = 86_400


def _address(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))[:64]


def _keys(address: str, window: int) -> tuple[str, str, str]:
    digest = hashlib.sha256(address.encode()).hexdigest()[:24]
    prefix = "gennai:audit:login-failed"
    return f"{prefix}:ip:{digest}:{window}", f"{prefix}:all:{window}", f"{prefix}:pending:{digest}"


def _count_pending(key: str) -> None:
    if not cache.add(key, 1, timeout=PENDING_SECONDS):
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=PENDING_SECONDS)


def _admit(address: str) -> tuple[bool, int]:
    """Whether this failure is written (and how many of the address's were coalesced before)."""
    window = int(time.time() // WINDOW_SECONDS)
    per_ip, total, pending = _keys(address, window)
    if not cache.add(per_ip, 1, timeout=WINDOW_SECONDS * 2):
        _count_pending(pending)
        return False, 0
    limit = int(getattr(settings, "GENNAI_AUDIT_LOGIN_FAILURES_PER_MINUTE", DEFAULT_PER_MINUTE))
    cache.add(total, 0, timeout=WINDOW_SECONDS * 2)
    try:
        written = int(cache.incr(total))
    except ValueError:
        written = 1
    if written > limit:
        _count_pending(pending)
        logger.warning("failed sign-ins over %d/min: coalescing (address counted, not written)", limit)
        return False, 0
    coalesced = int(cache.get(pending) or 0)
    if coalesced:
        cache.delete(pending)
    return True, coalesced


def _ministry_ids(user: Any) -> list[int | None]:
    from .events import _ministry_ids as ids

    return ids(user) if user is not None else [None]


def audit_login_failure(*, request: HttpRequest, reason: str, user: Any = None) -> bool:
    """Record a failed sign-in (coalesced, see the module docstring); True when written."""
    if reason not in REASONS:
        reason = "not_authenticated"
    address = _address(request)
    admitted, coalesced = _admit(address)
    logger.info("sign-in failed (%s) from %s%s", reason, address, "" if admitted else " (coalesced)")
    if not admitted:
        return False
    data: dict[str, Any] = {
        "reason": reason,
        "ip": address,
        "user_agent": str(request.META.get("HTTP_USER_AGENT", ""))[:200],
    }
    error = str(request.GET.get("error", ""))
    if reason == "idp_error":
        data["idp_error"] = error if _IDP_ERROR.match(error) else "other"
    if coalesced:
        data["coalesced_before"] = coalesced
    for ministry_id in _ministry_ids(user):
        audit_record(
            actor=None,
            action=LOGIN_FAILED,
            target_type="user" if user is not None else "",
            target_id=user.pk if user is not None else "",
            ministry_id=ministry_id,
            data=data if user is None else {**data, "user": user.username},
        )
    return True
