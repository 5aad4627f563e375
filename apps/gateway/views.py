"""``/v1`` through Django: browser sessions (with CSRF), and Django's test client.

Requests that carry an API key are served by the lean ASGI application in
front of Django (:mod:`apps.gateway.asgi`); requests without one reach these
views through Django's middleware stack, which resolves the session and its
membership. Both front ends call the same :mod:`apps.gateway.endpoints`. A key
presented here (e.g. by Django's test client) is judged by the key alone, as in
the lean application.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from . import endpoints, errors, validation
from .auth import Caller, caller_from_bearer, caller_from_session
from .endpoints import Reply
from .errors import ApiError, error_response

logger = logging.getLogger("gennai.gateway")


async def _caller(request: HttpRequest) -> Caller:
    header = request.headers.get("Authorization")
    if header is not None:
        return await caller_from_bearer(header)
    return caller_from_session(request)


def _read_body(request: HttpRequest) -> bytes:
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > validation.MAX_BODY_BYTES:
        raise errors.too_large(validation.MAX_BODY_BYTES)
    return request.body


def _response(reply: Reply) -> HttpResponseBase:
    if reply.stream is not None:
        return StreamingHttpResponse(
            reply.stream, status=reply.status, content_type=reply.content_type, headers=reply.headers
        )
    return HttpResponse(
        reply.body, status=reply.status, content_type=reply.content_type, headers=reply.headers
    )


def _v1(
    method: str,
) -> Callable[[Callable[..., Awaitable[Reply]]], Callable[..., Coroutine[Any, Any, HttpResponseBase]]]:
    """A CSRF-exempt async view (session writes run Django's CSRF check in :mod:`.auth`)
    whose errors, expected or not, reach the client in OpenAI's shape, never as HTML."""

    def decorate(
        handler: Callable[..., Awaitable[Reply]],
    ) -> Callable[..., Coroutine[Any, Any, HttpResponseBase]]:
        @csrf_exempt
        @functools.wraps(handler)
        async def view(request: HttpRequest, **kwargs: str) -> HttpResponseBase:
            started = endpoints.now()
            try:
                if request.method != method:
                    raise errors.method_not_allowed(method)
                caller = await _caller(request)
                return _response(await handler(request, caller, started, **kwargs))
            except ApiError as exc:
                return error_response(exc)
            except Exception:
                logger.exception("/v1 request failed")
                return error_response(errors.internal_error())

        return view

    return decorate


@_v1("POST")
async def chat_completions(request: HttpRequest, caller: Caller, started: float) -> Reply:
    return await endpoints.chat_completions(
        caller=caller, headers=_headers(request), body=_read_body(request), started=started
    )


@_v1("POST")
async def embeddings(request: HttpRequest, caller: Caller, started: float) -> Reply:
    return await endpoints.embeddings(
        caller=caller, headers=_headers(request), body=_read_body(request), started=started
    )


@_v1("GET")
async def models(request: HttpRequest, caller: Caller, started: float, model: str | None = None) -> Reply:
    return await endpoints.models(caller=caller, model=model)


def _headers(request: HttpRequest) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}
