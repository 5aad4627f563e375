"""A request-body limit in front of Django, for every path the lean ``/v1`` front passes on.

Why: under ASGI, Django's handler reads the *whole* request body into a
spooled temporary file (``ASGIHandler.read_body``) before any middleware,
view or authentication runs, with no size limit of its own
(``DATA_UPLOAD_MAX_MEMORY_SIZE`` applies later, to parsed form fields only).
One large POST from anyone, logged in or not, could fill the disk; for a
multipart upload Django's parser then writes a second copy.

:class:`RequestBodyLimit` refuses such a request before Django sees it:

* a declared ``Content-Length`` over the path's limit → 413 at once, nothing read;
* a body sent in chunks is counted as it arrives: past the limit, 413 is sent
  and Django is told the client left (``http.disconnect``), so it stops reading
  and answers nothing itself.

Limits (settings, bytes): every path gets ``GENNAI_MAX_REQUEST_BYTES``
(default 64 MiB: an AI-app run's files, an evaluation import). The document
upload view (``documents:upload``) may carry ``GENNAI_DOCUMENT_MAX_FILES``
files of ``GENNAI_DOCUMENT_MAX_BYTES`` each plus :data:`MULTIPART_SLACK`
(about 1 GiB by default), but **only for a signed-in, active user**
(:func:`session_user_may_send_more`): the view's own ``@login_required`` runs
only after Django has spooled the body, so without this check anyone could
make the server write a gigabyte per request. An anonymous request, or one
with an expired or forged session cookie, gets the general limit (413 with a
line saying that sign-in is needed). The check reads the session from the
database, so it runs only for a body that may exceed the general limit on a
path with a larger one: a declared length over the general limit, or a
chunked body once it has passed it; requests within the general limit never
cost a database hop. ``/v1/…`` is limited by the lean front itself
(:data:`apps.gateway.validation.MAX_BODY_BYTES`) before it passes anything on.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from types import SimpleNamespace
from typing import Any, cast

from django.conf import settings
from django.contrib.auth import get_user
from django.http.cookie import parse_cookie
from django.urls import Resolver404, resolve

from apps.tenancy.connections import db_hop

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

logger = logging.getLogger(__name__)

#: Room for multipart boundaries, part headers and the form's other fields.
MULTIPART_SLACK = 1024 * 1024
#: The views whose requests carry several large files.
UPLOAD_VIEWS = frozenset({"documents:upload"})
V1_PREFIX = "/v1/"

TOO_LARGE_BODY = (
    "リクエストが大きすぎます（上限 {limit} バイト）。ファイルを小さくするか、分けて送ってください。\n"
    "Request body too large (limit {limit} bytes). Send smaller files, or fewer at a time.\n"
)
#: Added to :data:`TOO_LARGE_BODY` when a larger limit was refused for want of a signed-in user.
NOT_SIGNED_IN = (
    "サインインしていないため、上限は {limit} バイトです。サインインしてからもう一度送ってください。\n"
    "Not signed in: the limit is {limit} bytes. Sign in and send it again.\n"
)


def general_limit() -> int:
    """The limit of every path for everyone (``GENNAI_MAX_REQUEST_BYTES``)."""
    return int(settings.GENNAI_MAX_REQUEST_BYTES)


def body_limit_for(path: str) -> int:
    """The largest request body, in bytes, accepted for ``path`` from a signed-in user.

    Security: the limit is chosen by the view the path resolves to (never by a
    header the client sends); an unknown path gets the general limit. A limit
    above :func:`general_limit` is granted only to a signed-in, active user
    (:class:`RequestBodyLimit`).
    """
    try:
        view_name = resolve(path).view_name
    except Resolver404:
        view_name = ""
    if view_name in UPLOAD_VIEWS:
        return int(settings.GENNAI_DOCUMENT_MAX_FILES * settings.GENNAI_DOCUMENT_MAX_BYTES + MULTIPART_SLACK)
    return general_limit()


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def _session_key(scope: Scope) -> str | None:
    """The session cookie's value from the scope's ``Cookie`` header(s) (HTTP/2 may send several)."""
    headers = scope.get("headers", ())
    header = "; ".join(value.decode("latin-1") for name, value in headers if name == b"cookie")
    return parse_cookie(header).get(settings.SESSION_COOKIE_NAME) or None


class _SessionView(dict[str, Any]):
    """A copy of a session's data for :func:`django.contrib.auth.get_user`, which writes nothing back.

    ``get_user`` flushes a session whose auth hash does not verify and cycles
    the key of one verified by a fallback secret. Here, before Django has seen
    the request, neither may happen: cycling would delete the session the
    browser's cookie names (Django, on this same request, does both itself).
    """

    def flush(self) -> None:
        self.clear()

    def cycle_key(self) -> None:
        pass


def session_user_may_send_more(session_key: str) -> bool:
    """Whether session ``session_key`` is a signed-in, active user's (sync: run it in :func:`db_hop`).

    Security: this decides who may make the server spool a body larger than
    the general limit, before Django's authentication runs. It resolves the
    user the way ``AuthenticationMiddleware`` will: the configured session
    engine (a missing or expired session, or a malformed key, loads as empty)
    and ``django.contrib.auth.get_user`` (the backend must be configured, the
    user found by it, and the session auth hash verified). Nothing is written:
    neither the session nor the user is changed.
    """
    store = importlib.import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    request = SimpleNamespace(session=_SessionView(store.items()))
    user = get_user(cast(Any, request))
    return bool(user.is_authenticated and user.is_active)


async def _signed_in(scope: Scope) -> bool:
    """Whether the request comes from a signed-in, active user; any doubt or error counts as no.

    No session cookie: no, without a database hop.
    """
    try:
        session_key = _session_key(scope)
        if session_key is None:
            return False
        return await db_hop(session_user_may_send_more, session_key)
    except Exception as exc:  # noqa: BLE001 - any failure must deny the larger limit, never answer 500
        # Only the exception's class: its text could carry the cookie's value, a credential.
        logger.warning("Body limit: session check failed (%s); treated as not signed in", type(exc).__name__)
        return False


async def _send_too_large(send: Send, limit: int, *, not_signed_in: bool = False) -> None:
    text = TOO_LARGE_BODY.format(limit=limit)
    if not_signed_in:
        text += NOT_SIGNED_IN.format(limit=limit)
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestBodyLimit:
    """ASGI wrapper: requests (other than ``/v1/…``) whose body exceeds their limit get 413.

    The limit is :func:`body_limit_for` the path for a signed-in, active user,
    and :func:`general_limit` for everyone else; who is signed in is asked only
    when a body may exceed the general limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(V1_PREFIX):
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(scope["path"])
        general = general_limit()
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _send_too_large(send, limit)
            return
        # None: not asked yet (only a body over the general limit, on a path with a larger one, asks).
        signed_in: bool | None = None
        if declared is not None and declared > general:
            signed_in = await _signed_in(scope)
            if not signed_in:
                await _send_too_large(send, general, not_signed_in=True)
                return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused, signed_in
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > general and limit > general and signed_in is None:
                    signed_in = await _signed_in(scope)
                allowed = limit if signed_in else general
                if received > allowed:
                    refused = True
                    await _send_too_large(send, allowed, not_signed_in=allowed < limit)
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, send)
