"""Writes of usage records."""

from __future__ import annotations

from apps.tenancy.scope import ScopeError, current_ministry_id

from .models import UsageRecord


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
) -> UsageRecord:
    """Record one model call for the active ministry (one INSERT, no audit: not a human change).

    Raises :class:`~apps.tenancy.scope.ScopeError` without an active scope: the
    row's ministry always comes from the scope, never from the caller.
    """
    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("usage_record_create needs an active ministry scope")
    record: UsageRecord = UsageRecord.objects.create(
        ministry_id=ministry_id,
        api_key_id=api_key_id,
        user_id=user_id,
        alias_name=alias_name[:100],
        deployment_id=deployment_id,
        revision=revision,
        endpoint=endpoint,
        level=level,
        prompt_tokens=max(int(prompt_tokens), 0),
        prompt_tokens_estimated=bool(prompt_tokens_estimated),
        completion_tokens=max(int(completion_tokens), 0),
        ttft_ms=None if ttft_ms is None else max(int(ttft_ms), 0),
        latency_ms=max(int(latency_ms), 0),
        status=status,
        detail=detail[:200],
    )
    return record
