"""The lean ``/v1`` front refuses Host headers outside ``ALLOWED_HOSTS``, as Django would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from apps.gateway import asgi


class DjangoStub:
    """Stands in for Django's handler: records that a request reached it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def call(headers: list[tuple[bytes, bytes]], *, path: str = "/v1/models") -> tuple[int, bytes, int]:
    """(status, body, calls that reached Django) for one GET request through the front."""
    django = DjangoStub()
    app = asgi.V1Application(django)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": headers,
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, django.calls


@pytest.fixture(autouse=True)
def hosts(settings: Any) -> Any:
    settings.ALLOWED_HOSTS = ["gennai.example.go.jp", ".ministry.example.jp"]
    settings.DEBUG = False
    settings.USE_X_FORWARDED_HOST = False
    yield settings
    asgi._host_verdicts.clear()


@pytest.mark.parametrize(
    "host",
    [b"evil.example.com", b"gennai.example.go.jp.evil.com", b"gennai.example.go.jp,evil.com", b"", b"[::1"],
)
def test_a_host_outside_allowed_hosts_is_refused_before_anything_else(host: bytes) -> None:
    status, body, reached_django = call([(b"host", host), (b"authorization", b"Bearer gk_whatever")])
    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_host"
    assert reached_django == 0


@pytest.mark.parametrize(
    "host",
    [
        b"gennai.example.go.jp",
        b"gennai.example.go.jp:8443",
        b"GENNAI.example.go.jp",
        b"a.ministry.example.jp",
    ],
)
def test_allowed_hosts_pass_with_djangos_semantics(host: bytes) -> None:
    status, _body, reached_django = call([(b"host", host)])  # no key: handed to Django
    assert (status, reached_django) == (204, 1)


def test_repeated_host_headers_are_refused() -> None:
    status, _body, _ = call([(b"host", b"gennai.example.go.jp"), (b"host", b"evil.example.com")])
    assert status == 400


def test_forwarded_host_only_counts_when_django_is_told_to_trust_it(hosts: Any) -> None:
    forwarded = [(b"host", b"gennai.example.go.jp"), (b"x-forwarded-host", b"evil.example.com")]
    assert call(forwarded)[0] == 204  # ignored, as Django ignores it
    hosts.USE_X_FORWARDED_HOST = True
    assert call(forwarded)[0] == 400  # now it is the host, and it is not allowed


def test_without_a_host_header_the_server_name_is_judged(hosts: Any) -> None:
    assert call([])[0] == 400  # 127.0.0.1:8000 is not allowed here
    hosts.ALLOWED_HOSTS = ["127.0.0.1"]
    assert call([])[0] == 204


def test_a_settings_change_is_seen_at_once_despite_the_cache(hosts: Any) -> None:
    headers = [(b"host", b"new.example.jp")]
    assert call(headers)[0] == 400
    hosts.ALLOWED_HOSTS = ["new.example.jp"]
    assert call(headers)[0] == 204
    hosts.ALLOWED_HOSTS = ["gennai.example.go.jp"]
    assert call(headers)[0] == 400


def test_debug_with_an_empty_list_allows_only_local_names(hosts: Any) -> None:
    hosts.ALLOWED_HOSTS = []
    hosts.DEBUG = True
    assert call([(b"host", b"localhost:8000")])[0] == 204
    assert call([(b"host", b"evil.example.com")])[0] == 400


def test_paths_outside_v1_are_left_to_django() -> None:
    assert call([(b"host", b"evil.example.com")], path="/chat/") == (204, b"", 1)
