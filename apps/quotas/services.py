"""Writes of usage records."""

from __future__ import annotations

from decimal import Decimal

from apps.tenancy.scope import ScopeError, current_ministry_id

from .models import UsageRecord
from .pricing import cost_yen as price_call
from .pricing import model_name_for


def usage_record_create(
    *,
    alias_name: str,
    status: str,
    api_key_id: int | None = None,
    user_id: int | None = None,
    deployment_id: int | None = None,
    revision: int | None = None,
    endpoint: str = "chat",
    level: int = 1,
    prompt_tokens: int = 0,
    prompt_tokens_estimated: bool = False,
    completion_tokens: int = 0,
    ttft_ms: int | None = None,
    latency_ms: int = 0,
    detail: str = "",
    feature: str = "chat",
    team_id: int | None = None,
    model_name: str = "",
    cost_yen: Decimal | None = None,
    request_id: str | None = None,
) -> UsageRecord:
    """Record one model call for the active ministry (one INSERT, no audit: not a human change).

    ``feature`` is what the call served (chat, rag, ingest, search, app, api,
    eval). ``model_name`` defaults to the model the deployment serves and
    ``cost_yen`` to the registry price of the call (:mod:`apps.quotas.pricing`,
    read from the registry snapshot: no query). Pass ``cost_yen`` when the
    caller already priced the call (admission settles with the same number).

    Raises :class:`~apps.tenancy.scope.ScopeError` without an active scope: the
    row's ministry always comes from the scope, never from the caller.
    """
    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("usage_record_create needs an active ministry scope")
    prompt_tokens = max(int(prompt_tokens), 0)
    completion_tokens = max(int(completion_tokens), 0)
    if not model_name:
        model_name = model_name_for(deployment_id=deployment_id)
    if cost_yen is None:
        cost_yen = price_call(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            deployment_id=deployment_id,
            model_name=model_name,
        )
    record: UsageRecord = UsageRecord.objects.create(
        ministry_id=ministry_id,
        # The admission reservation's id: the reconciler tells settled-and-ledgered requests by it.
        request_id=request_id,
        api_key_id=api_key_id,
        user_id=user_id,
        alias_name=alias_name[:100],
        deployment_id=deployment_id,
        revision=revision,
        endpoint=endpoint,
        level=level,
        prompt_tokens=prompt_tokens,
        prompt_tokens_estimated=bool(prompt_tokens_estimated),
        completion_tokens=completion_tokens,
        ttft_ms=None if ttft_ms is None else max(int(ttft_ms), 0),
        latency_ms=max(int(latency_ms), 0),
        status=status,
        detail=detail[:200],
        feature=feature[:16],
        team_id=team_id,
        model_name=model_name[:200],
        cost_yen=cost_yen,
    )
    return record
