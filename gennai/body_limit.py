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

Limits (settings, bytes): the document upload view
(``documents:upload``) may carry ``GENNAI_DOCUMENT_MAX_FILES`` files of
``GENNAI_DOCUMENT_MAX_BYTES`` each plus :data:`MULTIPART_SLACK`; every other
path ``GENNAI_MAX_REQUEST_BYTES`` (default 64 MiB: an AI-app run's files, an
evaluation import). ``/v1/…`` is limited by the lean front itself
(:data:`apps.gateway.validation.MAX_BODY_BYTES`) before it passes anything on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings
from django.urls import Resolver404, resolve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

#: Room for multipart boundaries, part headers and the form's other fields.
MULTIPART_SLACK = 1024 * 1024
#: The views whose requests carry several large files.
UPLOAD_VIEWS = frozenset({"documents:upload"})
V1_PREFIX = "/v1/"

TOO_LARGE_BODY = (
    "リクエストが大きすぎます（上限 {limit} バイト）。ファイルを小さくするか、分けて送ってください。\n"
    "Request body too large (limit {limit} bytes). Send smaller files, or fewer at a time.\n"
)


def body_limit_for(path: str) -> int:
    """The largest request body, in bytes, accepted for ``path``.

    Security: the limit is chosen by the view the path resolves to (never by a
    header the client sends); an unknown path gets the general limit.
    """
    try:
        view_name = resolve(path).view_name
    except Resolver404:
        view_name = ""
    if view_name in UPLOAD_VIEWS:
        return int(settings.GENNAI_DOCUMENT_MAX_FILES * settings.GENNAI_DOCUMENT_MAX_BYTES + MULTIPART_SLACK)
    return int(settings.GENNAI_MAX_REQUEST_BYTES)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _send_too_large(send: Send, limit: int) -> None:
    body = TOO_LARGE_BODY.format(limit=limit).encode()
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
    """ASGI wrapper: requests (other than ``/v1/…``) whose body exceeds :func:`body_limit_for` get 413."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(V1_PREFIX):
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _send_too_large(send, limit)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _send_too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, send)
