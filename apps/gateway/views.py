"""The OpenAI-compatible ``/v1`` API: plain async views, because this is the hot path.

Per request the platform does: authentication from an in-process key cache
(:mod:`apps.gateway.keys`), one thread hop for routing inside the ministry scope
(``plan_route`` reads the ministry's allowlist), the upstream call, and one
thread hop at the end for the single usage write. Per *chunk* it does no ORM
work and no JSON: each upstream chunk's raw JSON bytes are relayed as
``data: <raw>\\n\\n`` with the served model name swapped for the alias the client
asked for by one ``bytes.replace`` (see :func:`_relay`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import sys
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import translation
from django.views.decorators.csrf import csrf_exempt

from apps.quotas.models import UsageStatus
from apps.quotas.services import usage_record_create
from apps.registry.breaker import breaker
from apps.registry.models import Alias, ModelKind
from apps.registry.providers.base import (
    ChatChunk,
    ChatRequest,
    EmbedResult,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from apps.registry.providers.registry import get_provider_factory
from apps.registry.router import (
    AllUpstreamsFailed,
    RoutePlan,
    RouteRefused,
    allowed_aliases,
    plan_route,
    provider_target,
    stream_chat,
)
from apps.registry.snapshot import DeploymentInfo, get_snapshot
from apps.tenancy.scope import ministry_scope

from . import errors, keys, validation
from .errors import ApiError, error_response
from .services import request_finish

logger = logging.getLogger("gennai.gateway")

LEVEL_HEADER = "X-Gennai-Confidentiality"
CONVERSATION_HEADER = "X-Gennai-Conversation"
SESSION_MAX_LEVEL = 3
SESSION_DEFAULT_LEVEL = 1

_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# --- Who is calling ------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: an API key, or a signed-in member of a ministry."""

    ministry_id: int
    api_key_id: int | None
    user_id: int | None
    allowed_aliases: frozenset[str]  # empty: everything the ministry allows
    max_level: int
    default_level: int


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> str:
        return reason


def _csrf_failed(request: HttpRequest) -> bool:
    check = _CsrfCheck(lambda _request: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda _r: HttpResponse(), (), {}) is not None


async def _authenticate(request: HttpRequest) -> Caller:
    """``Authorization: Bearer <key>``, else the browser session's membership.

    Security: a request that presents a key is judged by the key alone (no
    fallback to the session). Session requests that change something must pass
    Django's CSRF check, since the view itself is CSRF-exempt for bearer clients.
    """
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.missing_key()
        info = keys.cached_key(token)
        if info is None:
            info = await sync_to_async(keys.lookup_key)(token)
        state = keys.check_key(info, token)
        if state == keys.KeyState.REVOKED:
            raise errors.revoked_key()
        if state == keys.KeyState.EXPIRED:
            raise errors.expired_key()
        if state != keys.KeyState.VALID or info is None:
            raise errors.invalid_key()
        return Caller(
            ministry_id=info.ministry_id,
            api_key_id=info.id,
            user_id=None,
            allowed_aliases=info.allowed_aliases,
            max_level=info.max_level,
            default_level=info.max_level,
        )
    membership = getattr(request, "membership", None)
    if membership is None:
        raise errors.missing_key()
    if request.method not in ("GET", "HEAD", "OPTIONS") and _csrf_failed(request):
        raise ApiError(
            403,
            "CSRF検証に失敗しました。ブラウザのセッションで利用する場合は X-CSRFToken ヘッダーが必要です。",
            "CSRF verification failed. Session-authenticated requests need the X-CSRFToken header.",
            code="csrf_failed",
        )
    return Caller(
        ministry_id=membership.ministry_id,
        api_key_id=None,
        user_id=membership.user_id,
        allowed_aliases=frozenset(),
        max_level=SESSION_MAX_LEVEL,
        default_level=SESSION_DEFAULT_LEVEL,
    )


def _requested_level(request: HttpRequest, caller: Caller) -> int:
    """The request's 機密性: the header if given (1–3), else the caller's default."""
    raw = request.headers.get(LEVEL_HEADER)
    if raw is None:
        return caller.default_level
    if raw.strip() not in ("1", "2", "3"):
        raise ApiError(
            400,
            f"{LEVEL_HEADER} ヘッダーは 1、2、3 のいずれかで指定してください。",
            f"The {LEVEL_HEADER} header must be 1, 2 or 3.",
            code="invalid_confidentiality",
        )
    return int(raw)


def _read_body(request: HttpRequest) -> bytes:
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > validation.MAX_BODY_BYTES:
        raise errors.too_large(validation.MAX_BODY_BYTES)
    return request.body


# --- Routing (one thread hop, inside the ministry scope) -----------------------


def _classification_en(alias_name: str, level: int) -> str:
    snapshot = get_snapshot()
    alias = snapshot.aliases.get(alias_name)
    highest = max(
        (
            snapshot.deployments[r.deployment_id].clearance
            for r in (alias.routes if alias else ())
            if r.weight > 0 and r.deployment_id in snapshot.deployments
        ),
        default=0,
    )
    name = alias.display_name_en if alias else alias_name
    return (
        f"Confidentiality level {level} information cannot be sent to '{name}' "
        f"(this model is cleared up to level {highest}). Review the classification "
        f"or choose a model cleared for level {level}."
    )


def _refusal(exc: RouteRefused, alias_name: str, level: int) -> ApiError:
    if exc.code == "model_not_found":
        return errors.model_not_found(alias_name)
    if exc.code == "classification":
        english = _classification_en(alias_name, level)
    else:
        english = {
            "no_deployment": "This model is currently unavailable.",
            "no_scope": "No ministry is selected.",
        }.get(exc.code, "The request was refused.")
    return ApiError(exc.status, exc.message, english, code=exc.code)


def _plan_sync(caller: Caller, *, alias_name: str, level: int, sticky: str | None, kind: str) -> RoutePlan:
    """Route ``alias_name`` for ``caller``; a refusal is recorded as a usage row, then raised."""
    outcome: RoutePlan | ApiError
    with ministry_scope(ministry_id=caller.ministry_id):
        if level > caller.max_level:
            outcome = ApiError(
                403,
                f"このAPIキーは機密性{caller.max_level}までの情報にしか利用できません"
                f"（指定: 機密性{level}）。",
                f"This API key may only be used for information up to confidentiality level "
                f"{caller.max_level} (requested: level {level}).",
                code="confidentiality_exceeds_key",
            )
        elif caller.allowed_aliases and alias_name not in caller.allowed_aliases:
            outcome = errors.model_not_found(alias_name)
        else:
            try:
                with translation.override("ja"):
                    outcome = plan_route(alias_name=alias_name, level=level, sticky_key=sticky)
            except RouteRefused as exc:
                outcome = _refusal(exc, alias_name, level)
            if isinstance(outcome, RoutePlan) and outcome.alias.kind != kind:
                what_ja = "チャット" if kind == ModelKind.CHAT else "埋め込み"
                what_en = "chat" if kind == ModelKind.CHAT else "embedding"
                outcome = ApiError(
                    400,
                    f"モデル「{alias_name}」は{what_ja}用ではありません。",
                    f"The model '{alias_name}' is not a {what_en} model.",
                    code="model_not_supported",
                    param="model",
                )
        if isinstance(outcome, ApiError):
            usage_record_create(
                api_key_id=caller.api_key_id,
                user_id=caller.user_id,
                alias_name=alias_name,
                endpoint=kind,
                level=level,
                status=UsageStatus.REFUSED,
                detail=outcome.code or "",
            )
    # Raised outside the scope: raising inside would roll the refusal row back.
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome


# --- Accounting ----------------------------------------------------------------


@dataclass
class _Usage:
    """What the single end-of-request usage write needs; filled in as the response goes."""

    caller: Caller
    plan: RoutePlan
    level: int
    endpoint: str
    started: float
    deployment: DeploymentInfo | None = None
    ttft_ms: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    detail: str = ""
    done: bool = field(default=False)

    def first_token(self, deployment: DeploymentInfo) -> None:
        self.deployment = deployment
        self.ttft_ms = int((time.perf_counter() - self.started) * 1000)

    def take_usage(self, usage: dict[str, int] | None) -> None:
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)

    async def finish(self, status: str) -> None:
        """Write the usage row once, even if the request task is being cancelled."""
        if self.done:
            return
        self.done = True
        call = sync_to_async(request_finish)(
            ministry_id=self.caller.ministry_id,
            api_key_id=self.caller.api_key_id,
            user_id=self.caller.user_id,
            alias_name=self.plan.alias.name,
            deployment_id=self.deployment.id if self.deployment else None,
            revision=self.plan.alias.revision_number or None,
            endpoint=self.endpoint,
            level=self.level,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_ms=self.ttft_ms,
            latency_ms=int((time.perf_counter() - self.started) * 1000),
            status=status,
            detail=self.detail,
        )
        try:
            await asyncio.shield(call)
        except asyncio.CancelledError:  # the shielded write still completes
            raise
        except Exception:
            logger.exception("usage record failed")


def _internal_error() -> ApiError:
    return ApiError(
        500,
        "内部エラーが発生しました。しばらくしてからもう一度お試しください。",
        "An internal error occurred. Please try again later.",
        code="internal_error",
    )


def _openai_errors(
    view: Callable[..., Coroutine[Any, Any, HttpResponseBase]],
) -> Callable[..., Coroutine[Any, Any, HttpResponseBase]]:
    """Any unexpected exception still reaches the client in OpenAI's shape (500), never as HTML."""

    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return await view(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("/v1 request failed")
            return error_response(_internal_error())

    return wrapper


def _upstream_failed(exc: BaseException) -> ApiError:
    if isinstance(exc, UpstreamRejected):
        detail = str(exc).partition(": ")[2] or str(exc)  # drop the internal deployment name
        return ApiError(
            400,
            "モデルサーバーがリクエストを受け付けませんでした。",
            f"The model server rejected the request ({detail[:300]}).",
            code="upstream_rejected",
        )
    return ApiError(
        503,
        "モデルサーバーに接続できませんでした。しばらくしてからもう一度お試しください。",
        "The model server is unavailable. Please try again later.",
        code="upstream_unavailable",
    )


# --- /v1/chat/completions --------------------------------------------------------


def _empty_choices(raw: bytes) -> bool:
    return b'"choices":[]' in raw or b'"choices": []' in raw


def _synthesized(chunk: ChatChunk, alias: str) -> bytes:
    """OpenAI chunk JSON for a provider plugin that leaves ``raw`` empty (allowed by its contract)."""
    delta: dict[str, str] = {}
    if chunk.delta:
        delta["content"] = chunk.delta
    if chunk.reasoning_delta:
        delta["reasoning_content"] = chunk.reasoning_delta
    payload: dict[str, Any] = {
        "id": "chatcmpl-gennai",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": alias,
        "choices": []
        if chunk.usage and not delta and chunk.finish_reason is None
        else [{"index": 0, "delta": delta, "finish_reason": chunk.finish_reason}],
    }
    if chunk.usage:
        payload["usage"] = chunk.usage
    return json.dumps(payload, ensure_ascii=False).encode()


async def _relay(
    stream: AsyncIterator[tuple[DeploymentInfo, ChatChunk]],
    first: ChatChunk,
    usage: _Usage,
    *,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """SSE frames from upstream chunks: raw JSON bytes passed through, model renamed.

    The rename is ``raw.replace(b'"<served>"', b'"<alias>"', 1)``: the first
    JSON string exactly equal to the served model name is the ``model`` field in
    every OpenAI-compatible chunk (``id``/``object``/``created`` come before it
    and are never that string; text inside strings has its quotes escaped). If a
    server names the model differently, the chunk is relayed unchanged.
    """
    assert usage.deployment is not None
    needle = json.dumps(usage.deployment.served_model_name, ensure_ascii=False).encode()
    alias = json.dumps(usage.plan.alias.name, ensure_ascii=False).encode()
    status = UsageStatus.INTERRUPTED
    content_chunks = 0
    final = _DONE
    try:
        chunk = first
        while True:
            if not chunk.raw:
                chunk.raw = _synthesized(chunk, usage.plan.alias.name)
            if chunk.usage is None:
                if chunk.delta:
                    content_chunks += 1
                yield b"data: " + chunk.raw.replace(needle, alias, 1) + b"\n\n"
            else:
                usage.take_usage(chunk.usage)
                # The provider always asks the upstream for usage; forward the
                # usage-only chunk (no choices) only if the client asked for it.
                if include_usage or chunk.delta or chunk.finish_reason or not _empty_choices(chunk.raw):
                    yield b"data: " + chunk.raw.replace(needle, alias, 1) + b"\n\n"
            try:
                chunk = (await stream.__anext__())[1]
            except StopAsyncIteration:
                break
        status = UsageStatus.OK
    except UpstreamError as exc:
        logger.warning("stream interrupted after first token: %s", exc)
        usage.detail = "upstream_interrupted"
        final = errors.sse_error_event(
            "モデルサーバーとの接続が途中で切れたため、回答が途中で終わりました。"
            " / The model server connection was lost; the answer is incomplete.",
            code="upstream_interrupted",
        )
    except Exception:
        logger.exception("stream relay failed")
        status = UsageStatus.ERROR
        usage.detail = "relay_error"
        final = errors.sse_error_event(
            "内部エラーにより回答が途中で終わりました。 / An internal error ended the answer early.",
            code="internal_error",
        )
    finally:
        # Normal end, upstream failure, or client gone (GeneratorExit/CancelledError,
        # which then propagates past the last yield): close the upstream response,
        # then write the usage row once.
        await stream.aclose()  # type: ignore[attr-defined]
        if not usage.completion_tokens:
            usage.completion_tokens = content_chunks
        await usage.finish(status)
    # After the write: once a client has seen the end, its usage is on the books.
    yield final


def _merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    for delta in deltas:
        call = calls.setdefault(
            int(delta.get("index", len(calls))),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


async def _aggregate(
    stream: AsyncIterator[tuple[DeploymentInfo, ChatChunk]], first: ChatChunk, usage: _Usage
) -> dict[str, Any]:
    """One ``chat.completion`` from the streamed chunks (non-stream requests)."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason: str | None = None
    meta: dict[str, Any] = {}
    chunk: ChatChunk | None = first
    while chunk is not None:
        payload = json.loads(chunk.raw or _synthesized(chunk, usage.plan.alias.name))
        for key in ("id", "created", "system_fingerprint"):
            if payload.get(key) is not None:
                meta.setdefault(key, payload[key])
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            if chunk.reasoning_delta:
                reasoning.append(chunk.reasoning_delta)
            if delta.get("tool_calls"):
                _merge_tool_calls(calls, delta["tool_calls"])
            finish_reason = choice.get("finish_reason") or finish_reason
        usage.take_usage(chunk.usage)
        try:
            chunk = (await stream.__anext__())[1]
        except StopAsyncIteration:
            chunk = None
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(content) if content or not calls else None,
    }
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if not usage.completion_tokens:
        usage.completion_tokens = len(content)
    result: dict[str, Any] = {
        "id": meta.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(meta.get("created") or time.time()),
        "model": usage.plan.alias.name,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason or "stop", "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    }
    if meta.get("system_fingerprint"):
        result["system_fingerprint"] = meta["system_fingerprint"]
    return result


async def _guarded(
    usage: _Usage, stream: AsyncIterator[Any], work: Callable[[], Awaitable[HttpResponseBase]]
) -> HttpResponseBase:
    """Run ``work``; on a client disconnect close the upstream and record the request as interrupted."""
    try:
        return await work()
    except asyncio.CancelledError:
        await stream.aclose()  # type: ignore[attr-defined]
        await usage.finish(UsageStatus.INTERRUPTED)
        raise


@csrf_exempt
@_openai_errors
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    started = time.perf_counter()
    try:
        if request.method != "POST":
            raise errors.method_not_allowed("POST")
        caller = await _authenticate(request)
        chat = validation.chat_params(validation.parse_json(_read_body(request)))
        level = _requested_level(request, caller)
        plan = await sync_to_async(_plan_sync)(
            caller,
            alias_name=chat.model,
            level=level,
            sticky=request.headers.get(CONVERSATION_HEADER) or chat.user,
            kind=ModelKind.CHAT,
        )
    except ApiError as exc:
        return error_response(exc)

    usage = _Usage(caller=caller, plan=plan, level=level, endpoint="chat", started=started)
    stream = stream_chat(plan, ChatRequest(messages=chat.messages, params=chat.params))

    async def respond() -> HttpResponseBase:
        try:
            deployment, first = await stream.__anext__()  # failover happens in here
        except (AllUpstreamsFailed, UpstreamError, StopAsyncIteration) as exc:
            logger.warning("chat %s: no upstream answered: %s", plan.alias.name, exc)
            error = _upstream_failed(exc)
            usage.detail = error.code or ""
            await usage.finish(UsageStatus.ERROR)
            return error_response(error)
        except Exception:
            logger.exception("chat %s: routing failed", plan.alias.name)
            usage.detail = "internal_error"
            await usage.finish(UsageStatus.ERROR)
            return error_response(_internal_error())
        usage.first_token(deployment)
        if chat.stream:
            return StreamingHttpResponse(
                _relay(stream, first, usage, include_usage=chat.include_usage),
                content_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        try:
            body = await _aggregate(stream, first, usage)
        except UpstreamError as exc:
            logger.warning("chat %s: interrupted: %s", plan.alias.name, exc)
            usage.detail = "upstream_interrupted"
            await usage.finish(UsageStatus.INTERRUPTED)
            return error_response(
                ApiError(
                    502,
                    "モデルサーバーとの接続が途中で切れました。",
                    "The model server connection was lost before the answer was complete.",
                    code="upstream_interrupted",
                )
            )
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        await usage.finish(UsageStatus.OK)
        return HttpResponse(json.dumps(body, ensure_ascii=False), content_type="application/json")

    return await _guarded(usage, stream, respond)


# --- /v1/embeddings --------------------------------------------------------------


async def _embed(plan: RoutePlan, inputs: list[str]) -> tuple[DeploymentInfo, EmbedResult]:
    """First candidate that answers (fail over on :class:`UpstreamUnavailable`, like chat)."""
    failures: list[str] = []
    for deployment in plan.candidates:
        if not breaker.allow(deployment.id) and len(plan.candidates) > 1:
            failures.append(f"{deployment.name}: circuit open")
            continue
        provider = get_provider_factory(deployment.provider)(provider_target(deployment))
        try:
            result = await provider.embed(inputs)
        except UpstreamUnavailable as exc:
            breaker.failure(deployment.id)
            failures.append(str(exc))
            continue
        breaker.success(deployment.id)
        if len(result.vectors) != len(inputs):
            raise UpstreamRejected(
                f"{deployment.name}: {len(result.vectors)} vectors for {len(inputs)} inputs"
            )
        return deployment, result
    raise AllUpstreamsFailed("; ".join(failures) or "no candidate")


def _b64(vector: list[float]) -> str:
    packed = array("f", vector)
    if sys.byteorder != "little":  # pragma: no cover - OpenAI's base64 is little-endian float32
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


@csrf_exempt
@_openai_errors
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    started = time.perf_counter()
    try:
        if request.method != "POST":
            raise errors.method_not_allowed("POST")
        caller = await _authenticate(request)
        params = validation.embed_params(validation.parse_json(_read_body(request)))
        level = _requested_level(request, caller)
        plan = await sync_to_async(_plan_sync)(
            caller, alias_name=params.model, level=level, sticky=None, kind=ModelKind.EMBEDDING
        )
    except ApiError as exc:
        return error_response(exc)
    usage = _Usage(caller=caller, plan=plan, level=level, endpoint="embedding", started=started)
    try:
        deployment, result = await _embed(plan, params.inputs)
    except (AllUpstreamsFailed, UpstreamError) as exc:
        logger.warning("embeddings %s: %s", plan.alias.name, exc)
        error = _upstream_failed(exc)
        usage.detail = error.code or ""
        await usage.finish(UsageStatus.ERROR)
        return error_response(error)
    except asyncio.CancelledError:
        await usage.finish(UsageStatus.INTERRUPTED)
        raise
    usage.first_token(deployment)
    usage.prompt_tokens = result.prompt_tokens
    await usage.finish(UsageStatus.OK)
    as_base64 = params.encoding_format == "base64"
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _b64(vector) if as_base64 else vector}
            for i, vector in enumerate(result.vectors)
        ],
        "model": plan.alias.name,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return HttpResponse(json.dumps(body), content_type="application/json")


# --- /v1/models --------------------------------------------------------------------


def _models_sync(caller: Caller) -> list[dict[str, Any]]:
    with ministry_scope(ministry_id=caller.ministry_id):
        aliases = [
            a for a in allowed_aliases() if not caller.allowed_aliases or a.name in caller.allowed_aliases
        ]
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


@csrf_exempt
@_openai_errors
async def models(request: HttpRequest, model: str | None = None) -> HttpResponseBase:
    try:
        if request.method != "GET":
            raise errors.method_not_allowed("GET")
        caller = await _authenticate(request)
        rows = await sync_to_async(_models_sync)(caller)
        if model is not None:
            row = next((r for r in rows if r["id"] == model), None)
            if row is None:
                raise errors.model_not_found(model)
            return HttpResponse(json.dumps(row), content_type="application/json")
    except ApiError as exc:
        return error_response(exc)
    return HttpResponse(json.dumps({"object": "list", "data": rows}), content_type="application/json")
