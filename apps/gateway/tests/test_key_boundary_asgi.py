"""API keys through the production stack (``gennai.asgi``: the lean /v1 front, then Django).

A request that presents a key is judged by the key alone: a wrong, revoked or
expired key next to a perfectly valid session cookie is refused, never served
as the session's user.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from apps.gateway.models import ApiKey
from apps.gateway.services import api_key_create, api_key_revoke
from tests.support.asgi import AsgiServer
from tests.support.fixtures import make_user


def session_cookies(user: Any) -> dict[str, str]:
    client = Client()
    client.force_login(user)  # committed: the test uses transactional_db through asgi_server
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


@pytest.mark.parametrize("kind", ["unknown", "revoked", "expired", "not-bearer"])
def test_invalid_key_with_valid_session_cookie_is_refused(
    asgi_server: AsgiServer, ministries: tuple[Any, Any], kind: str
) -> None:
    admin = make_user("admin-asgi", ministries[0], ["staff", "ministry_admin"])
    cookies = session_cookies(admin)
    key, plaintext = api_key_create(
        actor=admin, ministry=ministries[0], name="x", expires_at=timezone.now() + timedelta(days=1)
    )
    header = f"Bearer {plaintext}"
    if kind == "unknown":
        header = "Bearer gn-" + "Z" * 43
    elif kind == "revoked":
        api_key_revoke(actor=admin, key=key)
    elif kind == "expired":
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        header = f"Basic {plaintext}"

    with httpx.Client(base_url=asgi_server.url, cookies=cookies, timeout=10) as http:
        assert http.get("/v1/models").status_code == 200  # the session alone is accepted
        for method, path, body in (
            ("GET", "/v1/models", None),
            ("POST", "/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": "x"}]}),
        ):
            response = http.request(method, path, json=body, headers={"Authorization": header})
            assert response.status_code == 401, (kind, path, response.text)
            assert response.json()["error"]["code"] == "invalid_api_key"
