"""Dev IdP services: IdP login sessions (``sid``) and OIDC Back-Channel Logout.

Every login at the IdP starts an :class:`~apps.devidp.models.IdpSession`; its
``sid`` goes into ID tokens. Ending sessions deletes the matching Django
sessions, and :func:`send_backchannel_logout` tells the registered clients,
with logout tokens shaped like Keycloak's.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import import_module
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import logout as django_logout
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.core.exceptions import ImproperlyConfigured
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone
from oidc_provider.lib.utils.common import get_issuer
from oidc_provider.models import RSAKey

from .claims import sub_generator
from .models import ClientBackchannel, IdpSession

logger = logging.getLogger(__name__)

#: Key under which the IdP session id is kept in the Django session.
SESSION_SID_KEY = "devidp_sid"
#: OIDC Back-Channel Logout 1.0 event type.
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: Lifetime of a logout token, in seconds.
LOGOUT_TOKEN_TTL = 120
#: Timeout for one back-channel POST, in seconds.
BACKCHANNEL_TIMEOUT = 5.0


@dataclass(frozen=True)
class BackchannelDelivery:
    """Result of POSTing one logout token to one client."""

    client_id: str
    uri: str
    sid: str | None
    status_code: int | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


# --- IdP sessions ----------------------------------------------------------


def start_idp_session(request: HttpRequest, user: Any) -> IdpSession:
    """Start a new IdP session for ``user`` and remember its ``sid`` in the browser session."""
    if request.session.session_key is None:
        request.session.save()
    idp_session = IdpSession.objects.create(user=user, session_key=request.session.session_key or "")
    request.session[SESSION_SID_KEY] = idp_session.sid
    return idp_session


def current_sid(request: HttpRequest) -> str | None:
    """Return the ``sid`` of the browser's IdP session, starting one if needed."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not hasattr(request, "session"):
        return None
    sid = request.session.get(SESSION_SID_KEY)
    if sid and IdpSession.objects.filter(sid=sid, user=user, ended_at__isnull=True).exists():
        return str(sid)
    return start_idp_session(request, user).sid


def end_idp_sessions(sessions: Iterable[IdpSession]) -> list[IdpSession]:
    """End IdP sessions: delete their Django sessions and mark them ended."""
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    ended = []
    for idp_session in sessions:
        if idp_session.session_key:
            store_class(session_key=idp_session.session_key).delete()
        if idp_session.ended_at is None:
            idp_session.ended_at = timezone.now()
            idp_session.save(update_fields=["ended_at"])
        ended.append(idp_session)
    return ended


@receiver(user_logged_in, dispatch_uid="devidp_start_session")
def _on_user_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Every login at the IdP starts a new IdP session."""
    if request is not None and hasattr(request, "session"):
        start_idp_session(request, user)


@receiver(user_logged_out, dispatch_uid="devidp_end_session")
def _on_user_logged_out(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    """Mark the browser's IdP session ended (Django flushes the session itself)."""
    if request is None or not hasattr(request, "session"):
        return
    sid = request.session.get(SESSION_SID_KEY)
    if sid:
        IdpSession.objects.filter(sid=sid, ended_at__isnull=True).update(ended_at=timezone.now())


# --- Logout tokens -----------------------------------------------------------


def signing_key() -> tuple[str, Any]:
    """Return ``(kid, private_key)`` of the key that signs ID tokens (first in the JWKS)."""
    rsakey = RSAKey.objects.order_by("id").first()
    if rsakey is None:
        raise ImproperlyConfigured("The dev IdP has no RSA key; run `manage.py idp_seed`.")
    private_key = serialization.load_pem_private_key(rsakey.key.encode("utf-8"), password=None)
    return rsakey.kid, private_key


def issuer() -> str:
    """Return the issuer (``{SITE_URL}/realms/gennai``), as in ID tokens."""
    return str(get_issuer())


def verify_id_token_hint(id_token_hint: str) -> dict[str, Any] | None:
    """Verify an ``id_token_hint`` (signature by one of our keys and issuer).

    Like Keycloak, an expired hint is still accepted. Returns the claims, or
    ``None`` when the token is not one of ours.
    """
    for rsakey in RSAKey.objects.order_by("id"):
        private_key = serialization.load_pem_private_key(rsakey.key.encode("utf-8"), password=None)
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token_hint,
                private_key.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256"],
                issuer=issuer(),
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            continue
        return claims
    return None


def build_logout_token(*, client_id: str, subject: str, sid: str | None) -> str:
    """Build a Back-Channel Logout 1.0 logout token (RS256, ``kid``) the way Keycloak does.

    Claims: ``iss``, ``aud``, ``iat``, ``exp``, ``jti``, ``sub``, ``sid`` (when
    known), ``typ: "Logout"`` and ``events``; never ``nonce``.
    """
    kid, private_key = signing_key()
    now = int(time.time())
    claims: dict[str, Any] = {
        "iat": now,
        "exp": now + LOGOUT_TOKEN_TTL,
        "jti": str(uuid.uuid4()),
        "iss": issuer(),
        "aud": client_id,
        "sub": subject,
        "typ": "Logout",
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    if sid:
        claims["sid"] = sid
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid})


def _post_logout_token(uri: str, token: str) -> tuple[int | None, str | None]:
    """POST ``logout_token`` form-encoded; return ``(status_code, error)``."""
    try:
        response = httpx.post(uri, data={"logout_token": token}, timeout=BACKCHANNEL_TIMEOUT)
    except httpx.HTTPError as exc:
        logger.warning("Back-channel logout to %s failed: %s", uri, exc)
        return None, f"{type(exc).__name__}: {exc}"
    if response.status_code >= 400:
        logger.warning("Back-channel logout to %s answered %s", uri, response.status_code)
    return response.status_code, None


def notify_clients(*, user: Any, sid: str | None) -> list[BackchannelDelivery]:
    """Send a logout token for ``user``/``sid`` to every client with a back-channel URI."""
    subject = sub_generator(user)
    deliveries = []
    for target in ClientBackchannel.objects.order_by("client_id"):
        token = build_logout_token(client_id=target.client_id, subject=subject, sid=sid)
        status_code, error = _post_logout_token(target.uri, token)
        deliveries.append(
            BackchannelDelivery(
                client_id=target.client_id,
                uri=target.uri,
                sid=sid,
                status_code=status_code,
                error=error,
            )
        )
    return deliveries


def send_backchannel_logout(*, username: str) -> list[BackchannelDelivery]:
    """End all IdP sessions of ``username`` and notify clients over the back channel.

    One logout token per registered client, carrying the user's latest IdP
    session id as ``sid`` (if the user ever logged in). Raises
    ``User.DoesNotExist`` for an unknown username.
    """
    user = get_user_model().objects.get(username=username)
    sessions = list(IdpSession.objects.filter(user=user).order_by("-created_at", "-id"))
    active = [idp_session for idp_session in sessions if idp_session.is_active]
    latest = (active or sessions)[0].sid if sessions else None
    end_idp_sessions(active)
    return notify_clients(user=user, sid=latest)


def logout_browser(request: HttpRequest, *, hinted_sid: str | None = None) -> list[str]:
    """RP-initiated logout: end the browser's IdP session (and ``hinted_sid``'s).

    Like Keycloak, clients with a back-channel URI are then notified for each
    ended session, unless ``GENNAI_IDP_BACKCHANNEL_ON_LOGOUT`` is False.
    Returns the ended ``sid`` values.
    """
    sids = {sid for sid in (request.session.get(SESSION_SID_KEY), hinted_sid) if sid}
    sessions = list(IdpSession.objects.select_related("user").filter(sid__in=sids, ended_at__isnull=True))
    django_logout(request)
    end_idp_sessions(sessions)
    if getattr(settings, "GENNAI_IDP_BACKCHANNEL_ON_LOGOUT", True):
        for idp_session in sessions:
            notify_clients(user=idp_session.user, sid=idp_session.sid)
    return [idp_session.sid for idp_session in sessions]
