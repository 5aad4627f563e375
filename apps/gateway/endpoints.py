"""The three ``/v1`` endpoints, independent of the HTTP front end that serves them.

Each endpoint takes an authenticated :class:`~apps.gateway.auth.Caller`, the
request's (lower-cased) headers and its body, and returns a :class:`Reply`. Two
front ends translate HTTP: the lean ASGI application (:mod:`apps.gateway.asgi`,
API keys, the hot path) and the Django views (:mod:`apps.gateway.views`,
browser sessions with CSRF). Both therefore enforce exactly the same rules.

Per request, in front of the first token: authentication from the in-process
key cache, the route (a decision reused for at most 0.25 s, see
:mod:`.routing`), admission's reservation with the ``started`` journal entry
(one Redis script), the upstream call. After the first
token: the background refreshes of the route and key caches
(:func:`refresh_ahead`), the relay, and at the end one script that settles the
reservation and appends the ``finished`` journal entry (see :mod:`apps.gateway.usage`).
Nothing per chunk but the byte relay. Nothing in front of the first token waits
for a thread or the database in steady state.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import time
from array import array
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from apps.quotas.admission import QuotaExceeded
from apps.quotas.models import UsageStatus
from apps.quotas.route_charge import reserve_or_release
from apps.quotas.tokens import prompt_fields
from apps.registry.models import Alias, ModelKind
from apps.registry.providers.base import (
    ChatRequest,
    UpstreamError,
    UpstreamRejected,
)
from apps.registry.router import AllUpstreamsFailed, allowed_aliases, embed_inputs, stream_chat
from apps.tenancy.connections import db_hop, scoped_db_hop

from . import admission, errors, keys, routing, validation
from .auth import CONVERSATION_HEADER, LEVEL_HEADER, Caller, requested_level
from .errors import ApiError
from .relay import aggregate, relay
from .routing import plan_for
from .usage import UsageMeter

logger = logging.getLogger("gennai.gateway")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_LEVEL = LEVEL_HEADER.lower()
_CONVERSATION = CONVERSATION_HEADER.lower()


@dataclass
class Reply:
    """A response: a whole body, or an SSE ``stream`` of frames."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status=status, body=json.dumps(payload, ensure_ascii=False).encode())


def error_reply(exc: ApiError) -> Reply:
    status, headers, body = errors.error_parts(exc)
    return Reply(status=status, body=body, headers=headers)


def _upstream_error(exc: BaseException) -> ApiError:
    """Our own error for an upstream failure; the upstream's text goes to the log only."""
    status = exc.status if isinstance(exc, UpstreamError) else None
    return errors.upstream_failed(status, rejected=isinstance(exc, UpstreamRejected))


# --- Caches refreshed ahead, once the first token is out ----------------------------

_key_check: asyncio.Future[None] | None = None


def refresh_ahead(caller: Caller, alias_name: str, level: int, kind: str) -> None:
    """Start the background refreshes that keep the next requests off the database.

    The route decision (:func:`.routing.refresh_ahead`) and the API keys' version
    check (:func:`.keys.version_check_due`) are refreshed here, after a request's
    first token went out, and not before its upstream call: each refresh is a
    thread running Django code, which competes with the event loop for the GIL,
    and before the upstream call it slowed that request's first token. Both keep
    their hard bounds (a decision is never served past its lifetime, a key is
    never judged from the cache once ``check_seconds()`` passed without a check),
    so a refresh started late costs a request a wait, never a stale answer.
    """
    global _key_check
    routing.refresh_ahead(caller, alias_name=alias_name, level=level, kind=kind)
    if caller.api_key_id is not None and keys.version_check_due():
        if _key_check is None or _key_check.done() or _key_check.get_loop() is not asyncio.get_running_loop():
            _key_check = asyncio.ensure_future(_check_key_version())


async def _check_key_version() -> None:
    try:
        await db_hop(keys.check_version)
    except Exception:  # the next request's own check (in lookup_key) covers it; nothing is served stale
        logger.exception("API key version re-check failed")


# --- /v1/chat/completions --------------------------------------------------------


async def chat_completions(
    *, caller: Caller, headers: Mapping[str, str], body: bytes, started: float
) -> Reply:
    chat = validation.chat_params(validation.parse_json(body))
    level = requested_level(headers.get(_LEVEL), caller)
    meter = UsageMeter(
        caller=caller,
        alias_name=chat.model,
        level=level,
        endpoint="chat",
        started=started,
        messages=chat.messages,
        prompt_extra=prompt_fields(chat.params),
    )
    outcome = await plan_for(
        caller,
        alias_name=chat.model,
        level=level,
        sticky=headers.get(_CONVERSATION) or chat.user,
        kind=ModelKind.CHAT,
    )
    if isinstance(outcome, ApiError):
        meter.detail = outcome.code or ""
        await meter.finish(UsageStatus.REFUSED)
        return error_reply(outcome)
    plan = outcome
    meter.revision = plan.alias.revision_number or None
    meter.model_name = plan.candidates[0].model_name if plan.candidates else None
    # Budgets and limits: reserved after routing, before the upstream call, with the started
    # entry in the same script; settled by meter.finish, which every ending of the request reaches.
    try:
        reserved = await reserve_or_release(
            admission.reserve_chat(
                caller=caller,
                plan=plan,
                messages=chat.messages,
                params=chat.params,
                request_id=meter.request_id,
                journal=meter.started_entry,
            ),
            meter.release,
        )
        meter.reservation = reserved
    except QuotaExceeded as exc:
        meter.detail = f"quota_{exc.kind}"
        meter.messages = None  # nothing reached a model: the refused row counts no tokens
        await meter.finish(UsageStatus.REFUSED)
        return error_reply(admission.quota_error(exc))
    try:
        await meter.start()
    except asyncio.CancelledError:  # the client left between the reservation and the upstream call
        await meter.finish(UsageStatus.INTERRUPTED)
        raise
    stream = stream_chat(plan, ChatRequest(messages=chat.messages, params=chat.params))
    try:
        try:
            deployment, first = await stream.__anext__()  # failover happens in here
            await meter.confirm_start()  # Redis's answer, long since arrived: no token before it
        except (AllUpstreamsFailed, UpstreamError, StopAsyncIteration) as exc:
            logger.warning("chat %s: no upstream answered: %s", plan.alias.name, exc)
            error = _upstream_error(exc)
            meter.detail = error.code or ""
            await meter.finish(UsageStatus.ERROR)
            return error_reply(error)
        except Exception:
            logger.exception("chat %s: routing failed", plan.alias.name)
            meter.detail = "internal_error"
            await meter.finish(UsageStatus.ERROR)
            return error_reply(errors.internal_error())
        meter.first_token(deployment)
        if chat.stream:
            return Reply(
                content_type="text/event-stream",
                headers=SSE_HEADERS,
                stream=relay(
                    stream,
                    first,
                    meter,
                    include_usage=chat.include_usage,
                    after_first=lambda: refresh_ahead(caller, chat.model, level, ModelKind.CHAT),
                ),
            )
        refresh_ahead(caller, chat.model, level, ModelKind.CHAT)
        try:
            result = await aggregate(stream, first, meter)
        except UpstreamError as exc:
            logger.warning("chat %s: interrupted: %s", plan.alias.name, exc)
            meter.detail = "upstream_interrupted"
            await meter.finish(UsageStatus.INTERRUPTED)
            return error_reply(errors.upstream_interrupted())
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        await meter.finish(UsageStatus.OK)
        return json_reply(result)
    except asyncio.CancelledError:
        # The client went away before the answer started: close the upstream, record it.
        await stream.aclose()  # type: ignore[attr-defined]
        await meter.finish(UsageStatus.INTERRUPTED)
        raise


# --- /v1/embeddings --------------------------------------------------------------


def _b64(vector: list[float]) -> str:
    packed = array("f", vector)
    if sys.byteorder != "little":  # pragma: no cover - OpenAI's base64 is little-endian float32
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


async def embeddings(*, caller: Caller, headers: Mapping[str, str], body: bytes, started: float) -> Reply:
    params = validation.embed_params(validation.parse_json(body))
    level = requested_level(headers.get(_LEVEL), caller)
    meter = UsageMeter(
        caller=caller,
        alias_name=params.model,
        level=level,
        endpoint="embedding",
        started=started,
        inputs=params.inputs,
    )
    outcome = await plan_for(
        caller, alias_name=params.model, level=level, sticky=None, kind=ModelKind.EMBEDDING
    )
    if isinstance(outcome, ApiError):
        meter.detail = outcome.code or ""
        await meter.finish(UsageStatus.REFUSED)
        return error_reply(outcome)
    plan = outcome
    meter.revision = plan.alias.revision_number or None
    try:
        reserved = await reserve_or_release(
            admission.reserve_embeddings(
                caller=caller,
                plan=plan,
                inputs=params.inputs,
                request_id=meter.request_id,
                journal=meter.started_entry,
            ),
            meter.release,
        )
        meter.reservation = reserved
    except QuotaExceeded as exc:
        meter.detail = f"quota_{exc.kind}"
        meter.inputs = None  # nothing reached a model: the refused row counts no tokens
        await meter.finish(UsageStatus.REFUSED)
        return error_reply(admission.quota_error(exc))
    try:
        await meter.start()
    except asyncio.CancelledError:
        await meter.finish(UsageStatus.INTERRUPTED)
        raise
    try:
        deployment, result = await embed_inputs(plan.candidates, lambda _deployment: params.inputs)
        await meter.confirm_start()
    except (AllUpstreamsFailed, UpstreamError) as exc:
        logger.warning("embeddings %s: %s", plan.alias.name, exc)
        error = _upstream_error(exc)
        meter.detail = error.code or ""
        await meter.finish(UsageStatus.ERROR)
        return error_reply(error)
    except asyncio.CancelledError:
        await meter.finish(UsageStatus.INTERRUPTED)
        raise
    meter.first_token(deployment)
    refresh_ahead(caller, params.model, level, ModelKind.EMBEDDING)
    meter.prompt_tokens = result.prompt_tokens
    prompt_tokens = meter.entry(UsageStatus.OK).prompt_tokens
    await meter.finish(UsageStatus.OK)
    as_base64 = params.encoding_format == "base64"
    return json_reply(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _b64(vector) if as_base64 else vector}
                for i, vector in enumerate(result.vectors)
            ],
            "model": plan.alias.name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )


# --- /v1/models --------------------------------------------------------------------


def _models_sync(caller: Caller) -> list[dict[str, Any]]:
    aliases = [a for a in allowed_aliases() if not caller.allowed_aliases or a.name in caller.allowed_aliases]
    created = dict(Alias.objects.filter(pk__in=[a.id for a in aliases]).values_list("pk", "created_at"))
    return [
        {
            "id": alias.name,
            "object": "model",
            "created": int(created[alias.id].timestamp()) if alias.id in created else 0,
            "owned_by": "gennai",
        }
        for alias in aliases
    ]


async def models(*, caller: Caller, model: str | None = None) -> Reply:
    rows = await scoped_db_hop(_models_sync, ministry_id=caller.ministry_id)(caller)
    if model is None:
        return json_reply({"object": "list", "data": rows})
    row = next((r for r in rows if r["id"] == model), None)
    if row is None:
        raise errors.model_not_found(model)
    return json_reply(row)


def now() -> float:
    """The request's start time (``time.perf_counter()``), taken as early as the front end can."""
    return time.perf_counter()
