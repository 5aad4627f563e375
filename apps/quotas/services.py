"""Writes of usage records, and of the grace admissions taken while Redis is down."""

from __future__ import annotations

import time
from decimal import Decimal

from django.db import connection, transaction

from apps.tenancy.scope import ScopeError, current_ministry_id

from .models import GraceWindow, UsageRecord
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


#: Minutes of grace rows kept (older ones are deleted when a minute's first row is written).
GRACE_KEEP_MINUTES = 5
#: The longest a grace admission waits for its minute's row lock. A caller's own outer transaction
#: (a sync path inside ``ministry_scope``) holds the lock until it ends; the others fail closed
#: after this rather than queue behind it (and, on a process's shared database thread, stall
#: every other hop of that process).
GRACE_LOCK_TIMEOUT_MS = 200


def grace_take(*, zone: str, per_minute: int, now: float | None = None) -> bool:
    """Take one of the active ministry's grace admissions in ``zone`` for this minute.

    Returns False when ``per_minute`` are already taken this minute (or the
    allowance is 0). Security: one atomic ``INSERT … ON CONFLICT DO UPDATE …
    WHERE admitted < per_minute`` in PostgreSQL, so every web process and
    replica draws on the same count — the allowance does not multiply with the
    number of processes — and two processes cannot both take the last one.
    Raises :class:`~apps.tenancy.scope.ScopeError` without an active scope (the
    row's ministry comes from the scope, under RLS), and the database's error when
    the minute's row stays locked longer than :data:`GRACE_LOCK_TIMEOUT_MS`
    (callers refuse then).
    """
    ministry_id = current_ministry_id()
    if ministry_id is None:
        raise ScopeError("grace_take needs an active ministry scope")
    if per_minute <= 0:
        return False
    minute = int((time.time() if now is None else now) // 60)
    table = GraceWindow._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        # Transaction-local, restored below (a rollback of this block restores it too).
        cursor.execute(
            "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
            [f"{GRACE_LOCK_TIMEOUT_MS}ms"],
        )
        (previous_lock_timeout, _set) = cursor.fetchone()
        cursor.execute(
            f"INSERT INTO {table} (ministry_id, zone, minute, admitted) VALUES (%s, %s, %s, 1) "
            f"ON CONFLICT (ministry_id, zone, minute) DO UPDATE SET admitted = {table}.admitted + 1 "
            f"WHERE {table}.admitted < %s RETURNING admitted",
            [ministry_id, zone[:16], minute, per_minute],
        )
        row = cursor.fetchone()
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous_lock_timeout])
        if row is None:
            return False
        if row[0] == 1:  # this minute's first grace admission: forget the old minutes
            cursor.execute(
                f"DELETE FROM {table} WHERE ministry_id = %s AND zone = %s AND minute < %s",
                [ministry_id, zone[:16], minute - GRACE_KEEP_MINUTES],
            )
    return True
