"""Drive the authorization-code flow through the real dev IdP, as a browser would."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from apps.devidp.demo_users import DEMO_PASSWORD


def idp_authorize(auth_url: str, username: str, *, stop_prefix: str) -> str:
    """Log in at the IdP and return the redirect back to the app (the callback URL)."""
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        response = browser.get(auth_url)
        for _ in range(10):
            location = response.headers.get("location")
            if response.status_code in (301, 302, 303) and location:
                target = urljoin(str(response.url), location)
                if target.startswith(stop_prefix):
                    return str(target)
                response = browser.get(target)
                continue
            if response.status_code == 200 and "/login" in response.url.path:
                csrf = browser.cookies.get("gennai_idp_csrftoken") or ""
                next_url = parse_qs(urlsplit(str(response.url)).query).get("next", [""])[0]
                response = browser.post(
                    str(response.url),
                    data={
                        "username": username,
                        "password": DEMO_PASSWORD,
                        "next": next_url,
                        "csrfmiddlewaretoken": csrf,
                    },
                    headers={"Referer": str(response.url)},
                )
                continue
            raise AssertionError(f"unexpected IdP response {response.status_code} at {response.url}")
    raise AssertionError("too many redirects at the IdP")


def login_with_test_client(client: Any, username: str, *, next_url: str | None = None) -> Any:
    """Full code + PKCE flow: our /accounts/login (``?next=``) → IdP → /accounts/callback/."""
    start = client.get("/accounts/login/", {"next": next_url} if next_url is not None else {})
    assert start.status_code == 302, start
    callback = idp_authorize(start["Location"], username, stop_prefix="http://testserver/")
    parts = urlsplit(callback)
    return client.get(f"{parts.path}?{parts.query}")
