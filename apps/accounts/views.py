"""Login, logout and back-channel logout endpoints (thin: logic lives in oidc/services)."""

from __future__ import annotations

import logging

from django.contrib import auth, messages
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView

from apps.audit.login_failures import audit_login_failure

from .oidc import LOGIN_FAILURE_ATTR, TOKENS_ATTR, provider_logout_url, verify_logout_token
from .recheck import ID_TOKEN_SESSION_KEY, claims_mark_fresh
from .services import oidc_session_forget, oidc_session_record, sessions_end_for_logout_token

logger = logging.getLogger("gennai.accounts")


def _suspicious_reason(exc: SuspiciousOperation) -> str:
    """Reason code of a refused callback (the message itself is never stored: it may echo input)."""
    message = str(exc).lower()
    if "state" in message:
        return "state_mismatch"
    if "nonce" in message:
        return "nonce_mismatch"
    return "token_rejected"


#: What the backend stores in the session for the login in progress, before ``auth.login``.
LOGIN_SESSION_KEYS = (ID_TOKEN_SESSION_KEY, "oidc_sid", "oidc_login_next")


class CallbackView(OIDCAuthenticationCallbackView):  # type: ignore[misc]
    """Finishes the code flow; records the IdP session id for back-channel logout.

    Every failed callback is audited (``accounts.login_failed``, coalesced per
    source address: :mod:`apps.audit.login_failures`) before the browser is sent
    away: a refused state or token (400) and every other failure (redirect).
    """

    def get(self, request: HttpRequest) -> HttpResponse:
        """Run the code flow; a refused state, nonce or token is audited, then answered 400."""
        try:
            response: HttpResponse = super().get(request)
        except SuspiciousOperation as exc:
            audit_login_failure(request=request, reason=_suspicious_reason(exc))
            raise
        return response

    def _failure_reason(self) -> str:
        request = self.request
        if request.GET.get("error"):
            return "idp_error"
        if "code" not in request.GET or "state" not in request.GET:
            return "incomplete_callback"
        if getattr(request, LOGIN_FAILURE_ATTR, None):
            return str(getattr(request, LOGIN_FAILURE_ATTR))
        user = getattr(self, "user", None)
        if user is not None and not user.is_active:
            return "user_disabled"
        if not hasattr(self, "user"):
            return "no_state"  # the library gave up before authenticating: no login in progress
        return "not_authenticated"

    def login_success(self) -> HttpResponse:
        """Log in, then keep the IdP session id and the tokens server-side for re-checks.

        Security: a browser still signed in as another user is signed out first
        (its session and stored tokens end), and the new session keeps what the
        backend just stored for it (:data:`LOGIN_SESSION_KEYS`). Left to
        ``auth.login``, the other user's session would be flushed *with* the new
        ID token and IdP session id: the claims re-check would then skip the new
        session for good and the back-channel logout could not find it.
        """
        self._end_other_users_session()
        response: HttpResponse = super().login_success()
        session = self.request.session
        if session.session_key is None:
            session.save()
        tokens = getattr(self.request, TOKENS_ATTR, None) or {}
        oidc_session_record(
            user=self.user,
            sid=str(session.get("oidc_sid", "")),
            session_key=str(session.session_key),
            refresh_token=str(tokens.get("refresh_token") or ""),
            access_token=str(tokens.get("access_token") or ""),
        )
        # The claims were just verified: the next re-check is due after the TTL.
        claims_mark_fresh(user_id=self.user.pk, session_key=str(session.session_key))
        return response

    def _end_other_users_session(self) -> None:
        request = self.request
        previous = getattr(request, "user", None)
        if previous is None or not previous.is_authenticated or previous.pk == self.user.pk:
            return
        session = request.session
        carried = {key: session[key] for key in LOGIN_SESSION_KEYS if key in session}
        old_key = session.session_key
        auth.logout(request)  # flushes the session: nothing of the other user stays
        if old_key:
            oidc_session_forget(session_key=old_key)
        session.update(carried)

    def login_failure(self) -> HttpResponse:
        reason = self._failure_reason()
        user = getattr(self, "user", None) if reason == "user_disabled" else None
        audit_login_failure(request=self.request, reason=reason, user=user)
        messages.error(self.request, _("ログインに失敗しました。もう一度お試しください。"))
        return HttpResponseRedirect(self.failure_url)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    """RP-initiated logout: end our session (and drop its stored tokens), then Keycloak's."""
    url = provider_logout_url(request) if request.user.is_authenticated else None
    if request.session.session_key:
        oidc_session_forget(session_key=request.session.session_key)
    auth.logout(request)
    return redirect(url) if url else redirect("home")


@csrf_exempt
@never_cache
@require_POST
def backchannel_logout_view(request: HttpRequest) -> HttpResponse:
    """Keycloak's back-channel logout: a signed logout token ends the user's sessions.

    Security: authenticated only by the token's signature and claims
    (:func:`apps.accounts.oidc.verify_logout_token`); CSRF does not apply to a
    server-to-server POST. Answers 400 on any invalid token, as the spec asks.
    """
    token = request.POST.get("logout_token", "")
    if not token:
        return JsonResponse({"error": "invalid_request"}, status=400)
    try:
        claims = verify_logout_token(token)
    except SuspiciousOperation as exc:
        logger.warning("back-channel logout rejected: %s", exc)
        return JsonResponse({"error": "invalid_request"}, status=400)
    ended = sessions_end_for_logout_token(subject=claims.get("sub"), sid=claims.get("sid"))
    logger.info("back-channel logout for sub=%s ended %d session(s)", claims.get("sub"), ended)
    response = HttpResponse(status=200)
    response["Cache-Control"] = "no-store"
    return response
