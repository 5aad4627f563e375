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
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from . import admission, admission_redis
from .limits import MinistryLimits, ministry_limits

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
    # Concurrency slot sets have no expiry (a live one must never vanish): drop the slots
    # whose reservation expired, so an idle scope's set empties (and Redis deletes it).
    for key in client.scan_iter(match=f"{admission.PREFIX}*:c", count=500):
        client.zremrangebyscore(key, "-inf", now_ms)
    return released


Groups = list[tuple[int | None, int | None, str, int, Decimal]]
"""Ledger sums of one ministry's month: (user id, API key id, alias, tokens, yen)."""


def _scope_values(
    ministry_id: int, groups: Groups, teams_of: dict[int, list[int]], limits: MinistryLimits
) -> dict[str, list[int]]:
    """Ledger totals ``[tokens, yen units]`` of every counter scope of one ministry that has limits.

    Mirrors :func:`apps.quotas.admission.levels_of`: a scope without a limit row
    (own or default) has no counter, so it gets no value either.
    """
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    m = f"m{ministry_id}"
    for user_id, api_key_id, alias_name, tokens, yen in groups:
        scopes = [(m, "ministry", ministry_id)]
        if api_key_id is not None:  # as admission: a key's request is not its creator's
            scopes.append((f"{m}:k{api_key_id}", "api_key", api_key_id))
        elif user_id is not None:
            scopes.append((f"{m}:u{user_id}", "user", user_id))
            scopes += [(f"{m}:t{team_id}", "team", team_id) for team_id in teams_of.get(user_id, ())]
        units = admission.yen_units(yen)
        for scope, level, subject_id in scopes:
            variants = [(scope, "")] + ([(f"{scope}|{alias_name}", alias_name)] if alias_name else [])
            for variant, alias in variants:
                values = limits.get(level, subject_id, alias)
                if values is None or not values.counted:
                    continue
                totals[variant][0] += int(tokens)
                totals[variant][1] += units
    return totals


def _own_limit_scopes(ministry_id: int, limits: MinistryLimits) -> set[str]:
    """Scopes of the ministry's rows that name their subject (defaults are found by their counters)."""
    m = f"m{ministry_id}"
    infix = {"team": ":t", "user": ":u", "api_key": ":k"}
    scopes: set[str] = set()
    for (level, subject_id, alias_name), values in limits.rows.items():
        if level == admission.PLATFORM or (level != "ministry" and subject_id == 0) or not values.counted:
            continue
        scope = m if level == "ministry" else f"{m}{infix[level]}{subject_id}"
        scopes.add(f"{scope}|{alias_name}" if alias_name else scope)
    return scopes


def _existing_counters(client: Any, month: str) -> dict[str, set[str]]:
    """Scopes with a month counter in Redis, by ministry id ("p" for the platform); one SCAN."""
    suffix = f":b:{month}"
    found: dict[str, set[str]] = defaultdict(set)
    for key in client.scan_iter(match=f"{admission.PREFIX}*{suffix}", count=1000):
        scope = key.decode()[len(admission.PREFIX) : -len(suffix)]
        head = scope.split("|", 1)[0].split(":", 1)[0]
        found["p" if head == "p" else head[1:]].add(scope)
    return found


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
    *, ministry_id: int, client: Any = None, now: datetime | None = None, existing: set[str] | None = None
) -> tuple[int, Groups]:
    """Reseed one ministry's counters of the current month; returns (counters written, ledger groups).

    ``existing``: the ministry's scopes that have a counter in Redis now (from
    :func:`_existing_counters`); each is rewritten, so drift on a counter with
    no usage in the ledger is reset too.
    """
    client = client or _client()
    month, start, end = month_bounds(now)
    groups, in_ledger, teams_of = _read_ledger(ministry_id, client, start, end)
    limits = ministry_limits(ministry_id)
    totals = _scope_values(ministry_id, groups, teams_of, limits)
    for scope in _own_limit_scopes(ministry_id, limits) | (existing or set()):
        totals.setdefault(scope, [0, 0])
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
    return written, groups


def ledger_by_alias(groups: Groups) -> dict[str, list[int]]:
    """``{alias: [tokens, yen units]}`` of ledger groups, ``""`` = all aliases together."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _user, _key, alias_name, tokens, yen in groups:
        units = admission.yen_units(yen)
        for alias in {"", alias_name}:
            sums[alias][0] += int(tokens)
            sums[alias][1] += units
    return sums


def reseed_platform(
    *,
    ministry_ids: list[int],
    sums: dict[str, list[int]],
    client: Any = None,
    existing: set[str] | None = None,
) -> int:
    """Platform counters := every ministry's ledger + notes + open reservations (after the ministries).

    ``sums``: the ledger of every ministry by alias (:func:`ledger_by_alias`, added up). Only the
    scopes the platform's limits name, and counters that exist, are written.
    """
    from .budget_models import PlatformLimit

    client = client or _client()
    month, _start, _end = month_bounds()
    aliases = PlatformLimit.objects.values_list("alias_name", flat=True)
    scopes = {f"p|{alias}" if alias else "p" for alias in aliases} | (existing or set())
    args: list[Any] = [admission.PREFIX, month, len(ministry_ids), *ministry_ids, len(scopes)]
    for scope in sorted(scopes):
        tokens, yen = sums.get(scope[2:] if scope.startswith("p|") else "", [0, 0])
        args += [scope, tokens, yen]
    return int(client.register_script(PLATFORM_LUA)(args=args))


def reconcile(*, client: Any = None) -> ReconcileResult:
    """Release leaked reservations, then reseed every ministry's and the platform's counters."""
    from apps.tenancy.models import Ministry

    client = client or _client()
    result = ReconcileResult(released=release_expired(client=client))
    month, _start, _end = month_bounds()
    existing = _existing_counters(client, month)
    ministry_ids = list(Ministry.objects.order_by("pk").values_list("pk", flat=True))
    platform: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for ministry_id in ministry_ids:
        written, groups = reseed_ministry(
            ministry_id=ministry_id, client=client, existing=existing.get(str(ministry_id), set())
        )
        result.ministries += 1
        result.counters += written
        for alias, (tokens, yen) in ledger_by_alias(groups).items():
            platform[alias][0] += tokens
            platform[alias][1] += yen
    result.counters += reseed_platform(
        ministry_ids=ministry_ids, sums=platform, client=client, existing=existing.get("p", set())
    )
    return result
