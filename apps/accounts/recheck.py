"""Role and group changes take effect on the next request, not the next login.

What this module guarantees, for every session that came through our OIDC
callback (the only way to sign in):

* The user's claims are re-read from the IdP at most every
  ``GENNAI_OIDC_CLAIMS_TTL_SECONDS`` (default 60 s) of that session, and at
  least that often while the session is used: a claims-cache entry per user and
  session says until when the last answer holds. The entry stores its own
  deadline, so it never counts as fresh past the TTL even if the cache kept it
  longer, and a miss (expiry, eviction, a Redis flush) always means a new
  check; nothing on the request path talks to the IdP while the entry is fresh.
* A check uses the session's refresh token (or, without one, its access token
  at the userinfo endpoint). The answer is mapped with the same function as a
  login (:func:`apps.accounts.services.user_sync_from_claims`), so a demotion
  or a removed group is in the database before the request reaches the view.
* If the IdP refuses (``invalid_grant``: user disabled, session ended, token
  revoked; or 401), the session ends at once.
* If the IdP cannot be reached, the session keeps its current memberships for
  at most ``GENNAI_OIDC_CLAIMS_MAX_STALE_SECONDS`` after the last successful
  check (retrying every ``GENNAI_OIDC_CLAIMS_RETRY_SECONDS``), then ends:
  an outage may delay a revocation by that bound, never forever.
* Concurrent requests of one session do not race each other with a rotating
  refresh token: one takes a short lock and checks; the others wait for its
  verdict.
* No database connection is held while waiting on the IdP (DESIGN invariant
  10), unless the caller is inside a transaction.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from django.utils import timezone

from apps.tenancy.connections import release_connections

from .models import OIDCSession
from .oidc import decode_provider_token
from .services import oidc_session_refresh
from .session_keys import session_key_digest

logger = logging.getLogger("gennai.accounts")

#: Session key mozilla-django-oidc sets at our callback (``OIDC_STORE_ID_TOKEN``):
#: its presence marks a session that was signed in through the IdP.
ID_TOKEN_SESSION_KEY = "oidc_id_token"  # noqa: S105  (a session key name, not a secret)
WAIT_STEP_SECONDS = 0.05
#: What a request checking a session writes to that session's lock key: a string, so the cache
#: signs it for that key (gennai/cache_serializer.py) and a value planted in Redis cannot pass for it.
CHECK_LOCK_VALUE = "checking"
HTTP_UNAUTHORIZED = 401
HTTP_BAD_REQUEST = 400


class IdpRefused(Exception):
    """The IdP says this session's user or tokens are no longer valid: end the session."""


class IdpUnavailable(Exception):
    """The IdP could not answer (network, 5xx, unexpected reply)."""


@dataclass(frozen=True)
class IdpAnswer:
    """Fresh claims and the tokens to keep for the next check."""

    claims: dict[str, Any]
    refresh_token: str
    access_token: str


def claims_cache_key(*, user_id: int, session_key: str) -> str:
    """Cache key of one session's claims check (the session key's stored digest, never the key)."""
    return f"gennai:oidc:claims:{user_id}:{session_key_digest(session_key)}"


def claims_mark_fresh(*, user_id: int, session_key: str, seconds: float | None = None) -> None:
    """Record that the session's claims hold for ``seconds`` (default: the TTL, never more)."""
    ttl = float(settings.GENNAI_OIDC_CLAIMS_TTL_SECONDS)
    seconds = ttl if seconds is None else min(seconds, ttl)
    if seconds <= 0:
        return
    key = claims_cache_key(user_id=user_id, session_key=session_key)
    cache.set(key, {"until": time.time() + seconds}, timeout=max(1, math.ceil(seconds)))


def claims_are_fresh(*, user_id: int, session_key: str) -> bool:
    """Whether a check of this session is still valid (its own deadline, not only the cache's)."""
    value = cache.get(claims_cache_key(user_id=user_id, session_key=session_key))
    return isinstance(value, dict) and float(value.get("until", 0)) > time.time()


def claims_forget(*, user_id: int, session_key: str) -> None:
    """Drop the session's claims-cache entry (the next request checks again)."""
    cache.delete(claims_cache_key(user_id=user_id, session_key=session_key))


def _verified_subject_claims(claims: dict[str, Any], subject: str | None) -> dict[str, Any]:
    if not subject or str(claims.get("sub")) != subject:
        raise IdpRefused("the IdP answered for another subject")
    return claims


def idp_refresh(*, refresh_token: str, subject: str | None) -> IdpAnswer:
    """Refresh grant at the token endpoint; verify the new ID token like a login's.

    Security: the new ID token is fully verified (signature, iss, aud, azp,
    exp, iat) and must name the session's ``sub``; a refusal (``invalid_grant``
    or 401) raises :class:`IdpRefused`.
    """
    data = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": settings.OIDC_RP_CLIENT_ID,
        "client_secret": settings.OIDC_RP_CLIENT_SECRET,
    }
    try:
        response = requests.post(settings.OIDC_OP_TOKEN_ENDPOINT, data=data, timeout=settings.OIDC_TIMEOUT)
    except requests.RequestException as exc:
        raise IdpUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from exc
    if response.status_code == HTTP_UNAUTHORIZED:
        raise IdpRefused("token endpoint: 401")
    if response.status_code == HTTP_BAD_REQUEST:
        try:
            error = str(response.json().get("error", ""))
        except ValueError:
            error = ""
        if error in ("invalid_grant", "invalid_client", "unauthorized_client"):
            raise IdpRefused(f"token endpoint: {error}")
        raise IdpUnavailable(f"token endpoint: 400 {error}")
    if response.status_code != 200:
        raise IdpUnavailable(f"token endpoint: {response.status_code}")
    try:
        tokens = response.json()
    except ValueError as exc:
        raise IdpUnavailable("token endpoint: not JSON") from exc
    access_token = str(tokens.get("access_token") or "")
    new_refresh = str(tokens.get("refresh_token") or refresh_token)
    id_token = tokens.get("id_token")
    if id_token:
        try:
            claims = decode_provider_token(str(id_token), require=["iss", "aud", "exp", "iat", "sub"])
        except SuspiciousOperation as exc:
            raise IdpRefused(f"refreshed ID token rejected: {exc}") from exc
    else:
        claims = idp_userinfo(access_token=access_token, subject=subject)
    return IdpAnswer(
        claims=_verified_subject_claims(claims, subject),
        refresh_token=new_refresh,
        access_token=access_token,
    )


def idp_userinfo(*, access_token: str, subject: str | None) -> dict[str, Any]:
    """Claims from the userinfo endpoint; a 401 (disabled user, revoked token) raises IdpRefused."""
    try:
        response = requests.get(
            settings.OIDC_OP_USER_ENDPOINT,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=settings.OIDC_TIMEOUT,
        )
    except requests.RequestException as exc:
        raise IdpUnavailable(f"userinfo unreachable: {type(exc).__name__}") from exc
    if response.status_code == HTTP_UNAUTHORIZED:
        raise IdpRefused("userinfo: 401")
    if response.status_code != 200:
        raise IdpUnavailable(f"userinfo: {response.status_code}")
    try:
        claims = dict(response.json())
    except ValueError as exc:
        raise IdpUnavailable("userinfo: not JSON") from exc
    return _verified_subject_claims(claims, subject)


def _check_locked(*, user: Any, session_key: str) -> bool:
    record = OIDCSession.objects.filter(session_key=session_key, user=user).first()
    if record is None or not (record.refresh_token or record.access_token):
        # Signed in through the IdP, but we hold nothing to re-check with (a
        # session from before tokens were kept): fail closed, sign in again.
        logger.info("user %s: OIDC session without stored tokens: ending it", user.pk)
        return False
    record.user = user  # the request's own instance: the re-check updates what the view sees
    checked_at = record.claims_checked_at
    release_connections()  # nothing waits on the IdP holding a pooled connection
    try:
        if record.refresh_token:
            answer = idp_refresh(refresh_token=record.refresh_token, subject=user.subject)
        else:
            claims = idp_userinfo(access_token=record.access_token, subject=user.subject)
            answer = IdpAnswer(claims=claims, refresh_token="", access_token=record.access_token)
    except IdpRefused as exc:
        logger.info("user %s: IdP refused the session (%s): ending it", user.pk, exc)
        return False
    except IdpUnavailable as exc:
        age = (timezone.now() - checked_at).total_seconds() if checked_at else math.inf
        if age > float(settings.GENNAI_OIDC_CLAIMS_MAX_STALE_SECONDS):
            logger.warning(
                "user %s: IdP unavailable (%s) and last check %.0fs ago: ending", user.pk, exc, age
            )
            return False
        logger.warning("user %s: IdP unavailable (%s); keeping last claims (%.0fs old)", user.pk, exc, age)
        claims_mark_fresh(
            user_id=user.pk, session_key=session_key, seconds=settings.GENNAI_OIDC_CLAIMS_RETRY_SECONDS
        )
        return True
    refreshed = oidc_session_refresh(
        record=record,
        claims=answer.claims,
        refresh_token=answer.refresh_token,
        access_token=answer.access_token,
    )
    if refreshed is None:
        logger.info("user %s: session ended during its re-check", user.pk)
        return False
    claims_mark_fresh(user_id=user.pk, session_key=session_key)
    return True


def session_recheck(request: HttpRequest) -> bool:
    """Re-check the request's OIDC session against the IdP if its claims cache expired.

    Returns False when the session must end (the caller logs the user out).
    Sessions not created by our OIDC callback (no stored ID token, e.g. a
    test's ``force_login``) are left alone: production has no other way in.

    Security: "created by our callback" is the stored ID token *or* an
    ``OIDCSession`` row for the session, so a session that lost its ID token
    (e.g. flushed by ``auth.login``) is still re-checked with its stored tokens
    rather than skipped for good.
    """
    user = getattr(request, "user", None)
    session = getattr(request, "session", None)
    if user is None or session is None or not user.is_authenticated:
        return True
    session_key = session.session_key
    if not session_key:
        return True
    if (
        ID_TOKEN_SESSION_KEY not in session
        and not OIDCSession.objects.filter(session_key=session_key).exists()
    ):
        return True
    if claims_are_fresh(user_id=user.pk, session_key=session_key):
        return True
    lock = claims_cache_key(user_id=user.pk, session_key=session_key) + ":lock"
    if cache.add(lock, CHECK_LOCK_VALUE, timeout=int(settings.OIDC_TIMEOUT) * 2 + 1):
        try:
            return _check_locked(user=user, session_key=session_key)
        finally:
            cache.delete(lock)
    # Another request of this session is checking (and may be rotating the
    # refresh token): wait for its verdict instead of racing it.
    deadline = time.monotonic() + float(settings.OIDC_TIMEOUT)
    while time.monotonic() < deadline:
        time.sleep(WAIT_STEP_SECONDS)
        if claims_are_fresh(user_id=user.pk, session_key=session_key):
            return True
        held = cache.get(lock)
        if held is None and not cache.has_key(lock):
            break
        if held != CHECK_LOCK_VALUE:
            # Security: a lock this platform did not write (planted in Redis: an integer, a
            # value moved from another key) must not let the session's requests skip the check.
            logger.warning("user %s: a forged claims-check lock; checking without it", user.pk)
            return _check_locked(user=user, session_key=session_key)
    else:
        # No verdict within the IdP's own timeout: whoever held the lock is gone; the session
        # is not let through unchecked (a lock kept alive from outside would otherwise do that).
        return _check_locked(user=user, session_key=session_key)
    # The lock went away: the checker's verdict may have landed just after the last look.
    if claims_are_fresh(user_id=user.pk, session_key=session_key):
        return True
    return OIDCSession.objects.filter(session_key=session_key).exists()
