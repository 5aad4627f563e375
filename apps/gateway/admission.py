"""``/v1`` under the ministry's budgets and limits (:mod:`apps.quotas.admission`).

Each chat completion and embeddings request is reserved after authentication and routing and before
the upstream call (one ``EVALSHA``, no database for an API key), and settled
when its usage meter finishes (:meth:`apps.gateway.usage.UsageMeter.finish`,
which every ending reaches: complete, upstream error, client gone, relay
failure) with exactly the numbers of its ledger row, so the counters and the
ledger agree without waiting for the reconciler.

``max_tokens``: the request's own value (``max_completion_tokens`` or
``max_tokens``) lowered to every level's cap; when a level caps it or the client
asked for a value, the capped value is what the upstream receives, so the
reservation bounds the answer. Without either, the reservation assumes
:data:`DEFAULT_MAX_TOKENS`.

A refusal is an OpenAI-shaped 429 (``type`` ``insufficient_quota`` for a month
budget, ``rate_limit_exceeded`` for RPM/TPM/concurrency) with ``Retry-After``;
Redis unreachable under a fail-closed zone is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from apps.quotas import admission
from apps.quotas.admission import AdmissionUnavailable, QuotaExceeded, Reservation, Subject
from apps.quotas.route_charge import plan_price_per_1m, plan_zone
from apps.quotas.tokens import count_input_tokens, count_prompt_tokens, prompt_fields
from apps.registry.router import RoutePlan
from apps.tenancy.connections import db_hop

from .auth import Caller
from .errors import ApiError

StartedEntry = Callable[[int, bool], bytes]
"""Builds a request's encoded ``started`` usage entry from its counted prompt tokens (and whether
the count is an estimate): :meth:`apps.gateway.usage.UsageMeter.started_entry`."""

#: The completion a request without ``max_tokens`` is assumed to need (chat's own default).
DEFAULT_MAX_TOKENS = 2048


def _user_team_ids(ministry_id: int, user_id: int) -> tuple[int, ...]:
    from apps.tenancy.models import TeamMembership
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=ministry_id):
        return tuple(sorted(TeamMembership.objects.filter(user_id=user_id).values_list("team_id", flat=True)))


async def subject_for_caller(caller: Caller, plan: RoutePlan) -> Subject:
    """The levels a request is charged to: an API key (and its ministry), or a user and their teams.

    Security: the ministry is the caller's (from the key or the session's
    membership), never from the request; a user's teams are read inside that
    ministry's scope. An API key belongs to no team.
    """
    zone = plan_zone(plan)
    if caller.api_key_id is not None:
        return Subject(
            ministry_id=caller.ministry_id,
            user_id=None,
            api_key_id=caller.api_key_id,
            team_ids=(),
            alias_name=plan.alias.name,
            zone=zone,
        )
    assert caller.user_id is not None
    team_ids = await db_hop(_user_team_ids, caller.ministry_id, caller.user_id)
    return Subject(
        ministry_id=caller.ministry_id,
        user_id=caller.user_id,
        api_key_id=None,
        team_ids=team_ids,
        alias_name=plan.alias.name,
        zone=zone,
    )


async def reserve_chat(
    *,
    caller: Caller,
    plan: RoutePlan,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    request_id: str,
    journal: StartedEntry | None = None,
) -> Reservation:
    """Reserve a chat completion (raises :class:`QuotaExceeded`); may lower ``params``' max tokens.

    ``journal``: builds the request's encoded ``started`` usage entry from the prompt count;
    admission writes it with the reservation (:func:`apps.quotas.admission.areserve`)."""
    subject = await subject_for_caller(caller, plan)
    # Both spellings count: an upstream may honour either (llama.cpp reads only
    # ``max_tokens``), so the larger one is what a client could get, and is capped.
    given = [params[k] for k in ("max_completion_tokens", "max_tokens") if params.get(k) is not None]
    requested = max(given) if given else None
    capped = await admission.acap_max_tokens(subject=subject, requested=requested, default=DEFAULT_MAX_TOKENS)
    capped = max(capped, 1)
    # The upstream must not produce more than was reserved (and than any level allows):
    # the cap is always written, also when the client sent none (an upstream's own
    # default may be "until the context is full").
    params["max_tokens"] = capped
    if "max_completion_tokens" in params:
        params["max_completion_tokens"] = capped
    model_name = plan.candidates[0].model_name if plan.candidates else None
    prompt_tokens, estimated = count_prompt_tokens(
        messages=messages, model_name=model_name, extra=prompt_fields(params)
    )
    return await admission.areserve(
        subject=subject,
        prompt_tokens=prompt_tokens,
        max_tokens=capped,
        request_id=request_id,
        price=plan_price_per_1m(plan),
        journal=journal(prompt_tokens, estimated) if journal is not None else None,
    )


async def reserve_embeddings(
    *,
    caller: Caller,
    plan: RoutePlan,
    inputs: list[str],
    request_id: str,
    journal: StartedEntry | None = None,
) -> Reservation:
    """Reserve an embeddings request: its counted input tokens, no completion (``journal``: as
    :func:`reserve_chat`'s)."""
    subject = await subject_for_caller(caller, plan)
    model_name = plan.candidates[0].model_name if plan.candidates else None
    tokens, estimated = count_input_tokens(inputs=inputs, model_name=model_name)
    return await admission.areserve(
        subject=subject,
        prompt_tokens=tokens,
        max_tokens=0,
        request_id=request_id,
        price=plan_price_per_1m(plan),
        journal=journal(tokens, estimated) if journal is not None else None,
    )


def _embedding_plan(level: int) -> RoutePlan | None:
    """The plan of the search embedding alias (inside the ministry scope), ``None`` if refused."""
    from apps.registry.router import RouteRefused, plan_route
    from apps.search.embeddings import _alias_name

    try:
        return plan_route(alias_name=_alias_name(), level=level)
    except RouteRefused:  # no embedding for this ministry: the search falls back to words, no model call
        return None


async def reserve_search(*, caller: Caller, query: str, request_id: str) -> Reservation | None:
    """Reserve ``/v1/search``'s query embedding (its counted tokens), ``None`` if no model is called.

    The embedding's own usage record is written where the model is called
    (:mod:`apps.search.embeddings`, charged through ``usage_context``), under
    another request id; so this reservation is settled to nothing
    (:func:`release`) and the reconciler brings the recorded tokens into the
    counters. What the reservation enforces is every level's RPM, TPM,
    concurrency and the budget's headroom before the model is called.
    """
    from apps.tenancy.connections import scoped_db_hop

    plan = await scoped_db_hop(_embedding_plan, ministry_id=caller.ministry_id)(caller.max_level)
    if plan is None or not plan.candidates:
        return None
    subject = await subject_for_caller(caller, plan)
    tokens, _estimated = count_input_tokens(inputs=[query], model_name=plan.candidates[0].model_name)
    return await admission.areserve(
        subject=subject,
        prompt_tokens=tokens,
        max_tokens=0,
        request_id=request_id,
        price=plan_price_per_1m(plan),
    )


async def release(reservation: Reservation) -> None:
    """Settle a reservation to nothing (its usage reaches the counters from the ledger)."""
    await asyncio.shield(
        admission.asettle(reservation=reservation, prompt_tokens=0, completion_tokens=0, cost_yen=Decimal(0))
    )


def quota_error(exc: QuotaExceeded) -> ApiError:
    """The OpenAI-shaped refusal: 429 (503 when admission is unavailable) with ``Retry-After``."""
    from django.utils import translation

    with translation.override("ja"):
        ja = admission.refusal_message(level=exc.level, kind=exc.kind, retry_after=exc.retry_after)
    with translation.override("en"):
        en = admission.refusal_message(level=exc.level, kind=exc.kind, retry_after=exc.retry_after)
    if isinstance(exc, AdmissionUnavailable):
        error = ApiError(503, ja, en, code="admission_unavailable")
        error.error_type = "service_unavailable"
    elif exc.kind == "budget":
        error = ApiError(429, ja, en, code="budget_exceeded")
        error.error_type = "insufficient_quota"
    else:
        error = ApiError(429, ja, en, code=f"{exc.kind}_limit_exceeded")
        error.error_type = "rate_limit_exceeded"
    error.headers = {"Retry-After": str(exc.retry_after)}
    return error
