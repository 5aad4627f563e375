"""The admission reconciler: release leaked reservations, reseed month counters from the ledger.

Run by Celery beat (``quotas.admission_reconcile``, every
``GENNAI_QUOTA_RECONCILE_SECONDS``, default 60 s). Two steps, both safe to run
at any time, concurrently with admissions and with each other:

1. **Release** every reservation past its expiry (its process died, or lost
   Redis while settling): its held budget is given back on every level and its
   concurrency slots freed (``lua/settle.lua``, mode ``r``). The record stays a
   day, marked released, so a request that outlived it still settles its real
   usage. What the dead request consumed reaches the counters through step 2,
   once the usage journal has settled it into the ledger
   (:mod:`apps.quotas.journal`, ``gateway_lost``).
2. **Reseed** each ministry's month counters (``lua/reseed.lua``): ``used`` =
   the ledger's sum (``UsageRecord``: prompt + completion tokens and
   ``cost_yen``, this month, per ministry / team member / user / API key, all
   aliases and per alias) plus what was settled in Redis but is not in the
   ledger yet; ``held`` = the estimates of the open reservations. Then the
   platform counters become the sum of the ministries'. Any drift — a lost
   settle, a hand-made ``INCRBY``, a restored backup — is gone after one pass.

The ledger sum and "which settled requests are already in it" are read in one
snapshot (one ``REPEATABLE READ`` transaction), so no request is counted twice
or missed between the two reads. Team counters count the usage of the team's
*current* members.

Reseeded counters: every counter with ledger rows this month, every counter that
has a limit (so a drifted counter can never refuse), and every counter an open
reservation or a not-yet-ledgered settlement touches.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from . import admission, admission_redis
from .limits import ministry_limits

logger = logging.getLogger("gennai.quotas")

RESEED_LUA = (admission.LUA_DIR / "reseed.lua").read_text()
PLATFORM_LUA = (admission.LUA_DIR / "platform.lua").read_text()
NOTE_MAX_AGE_SECONDS = 86_400
"""A settled request whose row never reached the ledger within a day is forgotten (the ledger wins)."""

_LEDGER_SQL = """
    SELECT user_id, api_key_id, alias_name,
           COALESCE(SUM(prompt_tokens + completion_tokens), 0), COALESCE(SUM(cost_yen), 0)
      FROM quotas_usagerecord
     WHERE ministry_id = %s AND created_at >= %s AND created_at < %s
     GROUP BY user_id, api_key_id, alias_name
"""
_IN_LEDGER_SQL = """
    SELECT replace(request_id::text, '-', '') FROM quotas_usagerecord
     WHERE ministry_id = %s AND request_id = ANY(%s::uuid[])
"""


@dataclass
class ReconcileResult:
    released: int = 0
    ministries: int = 0
    counters: int = 0
    aliases: set[str] = field(default_factory=set)


def _client() -> Any:
    return admission_redis.sync_scripts().client


def month_bounds(now: datetime | None = None) -> tuple[str, datetime, datetime]:
    """``(YYYYMM, first instant, first instant of next month)`` in the platform's time zone."""
    local = timezone.localtime(now)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return f"{start.year:04d}{start.month:02d}", start, end


def release_expired(*, client: Any = None) -> int:
    """Release every reservation past its expiry; returns how many.

    "Now" is Redis's clock, the clock the expiries were written with, so a
    skewed worker clock can neither release a live reservation nor keep a dead one.
    """
    client = client or _client()
    settle_script = client.register_script(admission.SETTLE_LUA)
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    released = 0
    for key in client.scan_iter(match=f"{admission.PREFIX}open:*", count=500):
        for rid in client.zrangebyscore(key, "-inf", now_ms):
            request_id = rid.decode()
            if settle_script(args=[admission.PREFIX, request_id, "r", 0, 0]):
                released += 1
                logger.info("admission: released expired reservation %s", request_id)
            else:  # the record expired too: just drop the index entry
                client.zrem(key, rid)
    return released


def _scope_values(
    ministry_id: int,
    groups: list[tuple[int | None, int | None, str, int, Decimal]],
    teams_of: dict[int, list[int]],
) -> dict[str, list[int]]:
    """Ledger totals ``[tokens, yen units]`` per counter scope of one ministry."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    m = f"m{ministry_id}"
    for user_id, api_key_id, alias_name, tokens, yen in groups:
        scopes = [m]
        if user_id is not None:
            scopes.append(f"{m}:u{user_id}")
            scopes += [f"{m}:t{team_id}" for team_id in teams_of.get(user_id, ())]
        if api_key_id is not None:
            scopes.append(f"{m}:k{api_key_id}")
        units = admission.yen_units(yen)
        for scope in scopes:
            for variant in (scope, f"{scope}|{alias_name}") if alias_name else (scope,):
                totals[variant][0] += int(tokens)
                totals[variant][1] += units
    return totals


def _limit_scopes(ministry_id: int) -> tuple[set[str], set[str]]:
    """Scopes that have a limit row (ministry's own), and the aliases named by any limit."""
    m = f"m{ministry_id}"
    scopes: set[str] = set()
    aliases: set[str] = set()
    prefix = {"ministry": "", "team": ":t", "user": ":u", "api_key": ":k"}
    for level, subject_id, alias_name in ministry_limits(ministry_id).rows:
        if alias_name:
            aliases.add(alias_name)
        if level == admission.PLATFORM:
            continue
        scope = m if level == "ministry" else f"{m}{prefix[level]}{subject_id}"
        scopes.add(f"{scope}|{alias_name}" if alias_name else scope)
    return scopes, aliases


def _note_ids(raw: list[bytes]) -> dict[str, str]:
    """Request ids of settled notes as ``{uuid hex: note key}``; a key that is no UUID can never be
    in the ledger (it ages out of the notes instead)."""
    ids: dict[str, str] = {}
    for key in raw:
        text = key.decode()
        try:
            ids[uuid.UUID(text).hex] = text
        except ValueError:
            continue
    return ids


def _read_ledger(ministry_id: int, client: Any, start: datetime, end: datetime) -> tuple[Any, list[str], Any]:
    """The month's ledger groups, the team map, and which settled notes are in the ledger — one snapshot."""
    from apps.tenancy.models import TeamMembership
    from apps.tenancy.scope import ministry_scope

    outer = connection.in_atomic_block
    with transaction.atomic():
        if not outer:
            # First statement of the transaction: every read below sees one snapshot.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with ministry_scope(ministry_id=ministry_id), connection.cursor() as cursor:
            cursor.execute(_LEDGER_SQL, [ministry_id, start, end])
            groups = [(row[0], row[1], row[2], int(row[3]), Decimal(row[4])) for row in cursor.fetchall()]
            teams_of: dict[int, list[int]] = defaultdict(list)
            for team_id, user_id in TeamMembership.objects.values_list("team_id", "user_id"):
                teams_of[user_id].append(team_id)
            # Read after the snapshot was taken: a note written later is never in it.
            notes = _note_ids(client.hkeys(f"{admission.PREFIX}settled:{ministry_id}"))
            hex_ids = list(notes)
            in_ledger: list[str] = []
            for i in range(0, len(hex_ids), 1000):
                cursor.execute(_IN_LEDGER_SQL, [ministry_id, hex_ids[i : i + 1000]])
                in_ledger += [notes[row[0]] for row in cursor.fetchall()]
    return groups, in_ledger, teams_of


def reseed_ministry(
    *, ministry_id: int, client: Any = None, now: datetime | None = None
) -> tuple[int, set[str]]:
    """Reseed one ministry's counters of the current month; returns (counters written, aliases seen)."""
    client = client or _client()
    month, start, end = month_bounds(now)
    groups, in_ledger, teams_of = _read_ledger(ministry_id, client, start, end)
    totals = _scope_values(ministry_id, groups, teams_of)
    limit_scopes, aliases = _limit_scopes(ministry_id)
    for scope in limit_scopes:
        totals.setdefault(scope, [0, 0])
    aliases |= {alias for _u, _k, alias, _t, _y in groups if alias}
    args: list[Any] = [
        admission.PREFIX,
        ministry_id,
        month,
        int(time.time()),
        NOTE_MAX_AGE_SECONDS,
        len(in_ledger),
        *in_ledger,
        len(totals),
    ]
    for scope, (tokens, yen) in totals.items():
        args += [scope, tokens, yen]
    written = int(client.register_script(RESEED_LUA)(args=args))
    return written, aliases


def reseed_platform(*, ministry_ids: list[int], aliases: set[str], client: Any = None) -> None:
    """Platform counters := the sum of the ministries' (run after the ministries were reseeded)."""
    from .budget_models import PlatformLimit

    client = client or _client()
    month, _start, _end = month_bounds()
    aliases = aliases | {a for a in PlatformLimit.objects.values_list("alias_name", flat=True) if a}
    args = [admission.PREFIX, month, len(ministry_ids), *ministry_ids, len(aliases), *sorted(aliases)]
    client.register_script(PLATFORM_LUA)(args=args)


def reconcile(*, client: Any = None) -> ReconcileResult:
    """Release leaked reservations, then reseed every ministry's and the platform's counters."""
    from apps.tenancy.models import Ministry

    client = client or _client()
    result = ReconcileResult(released=release_expired(client=client))
    ministry_ids = list(Ministry.objects.order_by("pk").values_list("pk", flat=True))
    for ministry_id in ministry_ids:
        written, aliases = reseed_ministry(ministry_id=ministry_id, client=client)
        result.ministries += 1
        result.counters += written
        result.aliases |= aliases
    reseed_platform(ministry_ids=ministry_ids, aliases=result.aliases, client=client)
    return result
