"""The lean ASGI application that serves ``/v1`` for API keys, in front of Django.

Why: Django's ASGI handler and middleware stack (sessions, authentication,
CSRF, tenancy, locale, messages…) cost several milliseconds of CPU per request
and run their synchronous parts in a thread; an API client with a key needs
none of them. So :class:`V1Application` looks at each HTTP request first:

* ``/v1/…`` **with** an ``Authorization`` header → served here: body read with
  a hard limit, key checked from the in-process cache, the endpoint from
  :mod:`apps.gateway.endpoints`, the response sent straight to the server
  (SSE frames as they come, no buffering);
* ``/v1/…`` **without** one (a browser session) → Django, after the body limit
  was enforced here, so sessions get Django's session, CSRF and tenancy
  middleware exactly as before;
* everything else → Django, untouched.

Before anything else, every ``/v1`` request's host is checked against
``settings.ALLOWED_HOSTS`` with Django's own rule (:func:`host_allowed`): the
requests served here never pass Django's ``get_host``. A refused host gets 400.

The body limit holds however the body arrives (``Content-Length`` or chunked):
reading stops as soon as more than :data:`validation.MAX_BODY_BYTES` arrived,
and the answer is 413.

A client that disconnects cancels the request task: the upstream response is
closed and the usage is recorded as ``interrupted`` (see :mod:`.usage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.core.signals import setting_changed

from . import endpoints, errors, validation
from .auth import caller_from_bearer
from .endpoints import Reply, error_reply
from .errors import ApiError

logger = logging.getLogger("gennai.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]  # Django's handler types its arguments more narrowly

PREFIX = "/v1/"


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def read_body(receive: Receive, *, limit: int, declared: int | None) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is
    read; a chunked body is counted as it arrives and reading stops at the limit.
    """
    if declared is not None and declared > limit:
        raise errors.too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise errors.too_large(limit)
            parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read body once, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# --- Host header (Django's ALLOWED_HOSTS, which the lean front would otherwise skip) -------

_host_verdicts: dict[str, bool] = {}
_MAX_HOST_VERDICTS = 1024  # distinct Host values remembered; an attacker's variety just clears it


def _raw_host(scope: Scope) -> str:
    """The host as :meth:`django.http.HttpRequest._get_raw_host` takes it from an ASGI scope.

    ``X-Forwarded-Host`` only with ``USE_X_FORWARDED_HOST``; repeated headers joined
    with a comma (as Django's ASGI request does, which makes them invalid); without a
    ``Host`` header, the server's name and port (PEP 333).
    """
    from django.conf import settings

    forwarded: list[str] = []
    host: list[str] = []
    for name, value in scope["headers"]:
        if name == b"host":
            host.append(value.decode("latin-1"))
        elif name == b"x-forwarded-host":
            forwarded.append(value.decode("latin-1"))
    if forwarded and settings.USE_X_FORWARDED_HOST:
        return ",".join(forwarded)
    if host:
        return ",".join(host)
    server_name, server_port = scope.get("server") or ("unknown", 80)
    default = "443" if scope.get("scheme") == "https" else "80"
    port = str(server_port)
    return str(server_name) if port == default else f"{server_name}:{port}"


def host_allowed(scope: Scope) -> bool:
    """Whether the request's host passes ``settings.ALLOWED_HOSTS``, exactly as Django judges it.

    Security: Django checks the host in ``HttpRequest.get_host`` (called by its
    middleware); requests served by this front never reach that code, so the
    same rule — :func:`django.http.request.validate_host` on the domain part,
    with Django's DEBUG fallback for an empty list — is applied here. The
    verdict is cached per distinct host value (cleared when the settings change).
    """
    raw = _raw_host(scope)
    verdict = _host_verdicts.get(raw)
    if verdict is None:
        from django.conf import settings
        from django.http.request import split_domain_port, validate_host

        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        domain, _port = split_domain_port(raw)
        verdict = bool(domain) and validate_host(domain, allowed)
        if len(_host_verdicts) >= _MAX_HOST_VERDICTS:
            _host_verdicts.clear()
        _host_verdicts[raw] = verdict
    return verdict


def _forget_host_verdicts(*, setting: str, **_kwargs: Any) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST"):
        _host_verdicts.clear()


setting_changed.connect(_forget_host_verdicts)


def bad_host() -> ApiError:
    return ApiError(
        400,
        "このホスト名では受け付けられません。",
        "The Host header is not allowed.",
        code="invalid_host",
    )


def _declared_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


async def send_reply(reply: Reply, send: Send) -> None:
    """Send a whole reply, or stream its SSE frames as they come."""
    head = [(b"content-type", reply.content_type.encode()), (b"x-content-type-options", b"nosniff")]
    head += [(name.lower().encode(), value.encode()) for name, value in reply.headers.items()]
    if reply.stream is None:
        head.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": head})
        await send({"type": "http.response.body", "body": reply.body})
        return
    stream = reply.stream
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": head})
        async for frame in stream:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        # On a disconnect this runs the relay's own cleanup (upstream closed, usage recorded).
        await stream.aclose()  # type: ignore[attr-defined]


async def _route(method: str, path: str, headers: dict[str, str], body: bytes, started: float) -> Reply:
    """The endpoint for ``path`` (below ``/v1/``), with its method checked."""
    if path in ("chat/completions", "embeddings"):
        if method != "POST":
            raise errors.method_not_allowed("POST")
        caller = await caller_from_bearer(headers["authorization"])
        handler = endpoints.chat_completions if path == "chat/completions" else endpoints.embeddings
        return await handler(caller=caller, headers=headers, body=body, started=started)
    if path == "models" or path.startswith("models/"):
        if method != "GET":
            raise errors.method_not_allowed("GET")
        caller = await caller_from_bearer(headers["authorization"])
        model = path.removeprefix("models").removeprefix("/") or None
        return await endpoints.models(caller=caller, model=model)
    if path == "search":  # issue 7: hybrid search over the key's ministry (apps/gateway/search_endpoint.py)
        if method != "POST":
            raise errors.method_not_allowed("POST")
        from .search_endpoint import search

        return await search(caller=await caller_from_bearer(headers["authorization"]), body=body)
    raise ApiError(404, "このAPIは存在しません。", "Unknown API endpoint.", code="not_found")


class V1Application:
    """ASGI application: ``/v1`` with API keys served here, everything else by ``django``."""

    def __init__(self, django: ASGIApp) -> None:
        self.django = django

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.django(scope, receive, send)
            return
        started = endpoints.now()
        if not host_allowed(scope):
            logger.warning("/v1: refused Host %r (not in ALLOWED_HOSTS)", _raw_host(scope)[:200])
            await send_reply(error_reply(bad_host()), send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        try:
            body = await read_body(
                receive, limit=validation.MAX_BODY_BYTES, declared=_declared_length(headers)
            )
        except ClientGone:
            return
        except ApiError as exc:
            await send_reply(error_reply(exc), send)
            return
        if "authorization" not in headers:
            # Browser sessions: Django's session, CSRF and tenancy middleware decide.
            await self.django(scope, _replay(body, receive), send)
            return
        await self._serve(scope, headers, body, started, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Server start-up and shutdown (Django's handler does not speak this protocol).

        At start-up everything imported so far (settings, URL conf, models, the
        registry…) lives as long as the process: :func:`gc.freeze` leaves it out
        of the collector's full passes, which would otherwise walk it again and
        again while the event loop waits.
        """
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _serve(
        self, scope: Scope, headers: dict[str, str], body: bytes, started: float, receive: Receive, send: Send
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = complete = False

        async def tracked_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        async def watch() -> None:
            """Cancel the request when the client disconnects before the response is complete."""
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if not complete:
                gone = True
                task.cancel()

        watcher = asyncio.create_task(watch())
        try:
            try:
                reply = await _route(scope["method"], scope["path"][len(PREFIX) :], headers, body, started)
            except ApiError as exc:
                reply = error_reply(exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("/v1 request failed")
                reply = error_reply(errors.internal_error())
            await send_reply(reply, tracked_send)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()  # our own cancellation: the client left, nothing to report
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def wrap(django: ASGIApp) -> V1Application:
    return V1Application(django)
