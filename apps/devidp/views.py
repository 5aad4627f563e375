"""Pages of the dev IdP: demo login, RP-initiated logout and a back-channel dev tool."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model, login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from oidc_provider.models import Client

from .demo_users import DEMO_USERS, MINISTRIES, get_demo_user
from .services import logout_browser, send_backchannel_logout, verify_id_token_hint

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


class LoginView(View):
    """``/realms/gennai/login``: one-click demo users plus a username/password form."""

    template_name = "devidp/login.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        """Show the login page."""
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        """Log in (one-click demo button, or username and password) and go to ``next``."""
        username = request.POST.get("username", "").strip()
        if "password" in request.POST:
            user = authenticate(request, username=username, password=request.POST["password"])
            error = "ユーザー名またはパスワードが正しくありません / Invalid username or password."
        elif get_demo_user(username) is not None:
            user = get_user_model().objects.filter(username=username, is_active=True).first()
            error = "デモユーザーが未登録です / Demo user not seeded: run `manage.py idp_seed`."
        else:
            user, error = None, "デモユーザーではありません / Not a demo user."
        if user is None:
            return self._render(request, error=error, status=200)
        if request.user.is_authenticated and request.user.pk != user.pk:
            logout(request)  # switching users ends the previous IdP session
        login(request, user, backend=MODEL_BACKEND)
        return HttpResponseRedirect(self._next_url(request))

    @staticmethod
    def _next_url(request: HttpRequest) -> str:
        """Return a safe ``next`` target on this IdP (default: this page)."""
        next_url = request.POST.get("next") or request.GET.get("next") or ""
        if next_url and url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return next_url
        return reverse("devidp:login")

    def _render(self, request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
        """Render the page with the demo users and their ministries/roles."""
        ministry_names = {m["code"]: f"{m['name_ja']} / {m['name_en']}" for m in MINISTRIES}
        existing = set(
            get_user_model()
            .objects.filter(username__in=[u["username"] for u in DEMO_USERS])
            .values_list("username", flat=True)
        )
        demo_users = [
            {
                **entry,
                "ministry_names": [ministry_names.get(str(c), str(c)) for c in entry["ministries"]],
                "role_text": "; ".join(
                    f"{code}: {', '.join(roles)}" for code, roles in dict(entry["roles"]).items()
                ),
                "seeded": entry["username"] in existing,
            }
            for entry in DEMO_USERS
        ]
        context: dict[str, Any] = {
            "demo_users": demo_users,
            "next": request.POST.get("next") or request.GET.get("next") or "",
            "error": error,
            "username": request.POST.get("username", ""),
        }
        return render(request, self.template_name, context, status=status)


def _with_state(uri: str, state: str | None) -> str:
    """Append ``state`` to a post-logout redirect URI."""
    if not state:
        return uri
    parts = urlsplit(uri)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("state", state)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _logout_page(request: HttpRequest, mode: str, *, status: int = 200, **extra: Any) -> HttpResponse:
    """Render ``devidp/logout.html`` in ``confirm``, ``done`` or ``error`` mode."""
    return render(request, "devidp/logout.html", {"mode": mode, **extra}, status=status)


def _finish_logout(request: HttpRequest, redirect_uri: str | None, state: str | None) -> HttpResponse:
    """Redirect to the validated ``post_logout_redirect_uri`` or show "logged out"."""
    if redirect_uri:
        return HttpResponseRedirect(_with_state(redirect_uri, state))
    return _logout_page(request, "done")


def _validate_logout_params(
    client_id: str | None, redirect_uri: str | None
) -> tuple[Client | None, str | None]:
    """Return ``(client, error)``, checking the redirect URI like Keycloak does."""
    client = Client.objects.filter(client_id=client_id).first() if client_id else None
    if client_id and client is None:
        return None, "Invalid parameter: client_id"
    if redirect_uri:
        if client is None:
            return None, "Missing parameters: id_token_hint"
        if redirect_uri not in client.post_logout_redirect_uris:
            return client, "Invalid redirect uri"
    return client, None


@method_decorator(csrf_exempt, name="dispatch")
class LogoutView(View):
    """``/protocol/openid-connect/logout`` (RP-initiated logout, Keycloak semantics).

    With a valid ``id_token_hint`` the IdP session ends at once and the browser
    goes to ``post_logout_redirect_uri`` (which must be registered for the
    client), with ``state``. Without a hint a confirmation page is shown.
    """

    http_method_names = ["get", "post"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Handle GET and POST alike (parameters may come in either)."""
        params = request.POST if request.method == "POST" else request.GET
        hint = params.get("id_token_hint")
        redirect_uri = params.get("post_logout_redirect_uri")
        state = params.get("state")
        client_id = params.get("client_id")
        claims = verify_id_token_hint(hint) if hint else None
        if hint and claims is None:
            return _logout_page(request, "error", status=400, error="Invalid IDToken")
        if claims is not None:
            aud = claims.get("aud")
            hinted_client = aud[0] if isinstance(aud, list) else aud
            if client_id and client_id != hinted_client:
                return _logout_page(
                    request,
                    "error",
                    status=400,
                    error="Parameter client_id different than the client for which ID Token was issued",
                )
            client_id = hinted_client
        client, error = _validate_logout_params(client_id, redirect_uri)
        if error:
            return _logout_page(request, "error", status=400, error=error)
        if claims is not None:
            logout_browser(request, hinted_sid=claims.get("sid"))
            return _finish_logout(request, redirect_uri, state)
        if not request.user.is_authenticated:
            return _finish_logout(request, redirect_uri, state)
        return _logout_page(
            request,
            "confirm",
            client=client,
            hidden={
                "client_id": client_id or "",
                "post_logout_redirect_uri": redirect_uri or "",
                "state": state or "",
            },
        )


class LogoutConfirmView(View):
    """``/protocol/openid-connect/logout/logout-confirm``: the confirmation form's target."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        """End the browser's IdP session (CSRF-protected) and finish the logout."""
        redirect_uri = request.POST.get("post_logout_redirect_uri") or None
        _client, error = _validate_logout_params(request.POST.get("client_id") or None, redirect_uri)
        if error:
            return _logout_page(request, "error", status=400, error=error)
        logout_browser(request)
        return _finish_logout(request, redirect_uri, request.POST.get("state") or None)


@csrf_exempt
@require_POST
def dev_backchannel_logout(request: HttpRequest) -> JsonResponse:
    """``/realms/gennai/dev/backchannel-logout``: admin-triggered back-channel logout.

    Form field ``username``. Only when ``DEBUG`` or ``GENNAI_IDP_DEV_TOOLS``.
    """
    if not (settings.DEBUG or getattr(settings, "GENNAI_IDP_DEV_TOOLS", False)):
        return JsonResponse({"error": "dev tools are disabled"}, status=403)
    username = request.POST.get("username", "").strip()
    if not username:
        return JsonResponse({"error": "username is required"}, status=400)
    user_model = get_user_model()
    try:
        deliveries = send_backchannel_logout(username=username)
    except user_model.DoesNotExist:
        return JsonResponse({"error": f"unknown user: {username}"}, status=404)
    return JsonResponse({"username": username, "deliveries": [d.as_dict() for d in deliveries]})
