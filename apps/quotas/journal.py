"""The usage journal: a durable buffer between the ``/v1`` hot path and ``UsageRecord``.

Writing a row per request from the event loop costs a thread hop, a pooled
connection and a transaction (several milliseconds of CPU); the hot path instead
appends to a Redis stream (one ``XADD``, ≈0.1 ms) and a worker drains the stream
in bulk (:func:`usage_journal_drain`, scheduled by Celery beat every few seconds).

Two kinds of entry per request, both carrying the request's id (a UUID):

* ``started`` — written to Redis *before* the upstream is called (the command
  has left the process; Redis's answer is awaited before the first token is
  relayed, :func:`journal_started_sent`): ministry, key/user, alias, level,
  endpoint, time and the estimated prompt size;
* ``finished`` — appended when the request ends (complete, interrupted, failed,
  refused or the client went away): the whole usage record.

What "exactly one usage record per request" means, precisely:

1. every request whose ``started`` entry reached the journal (so: every request
   that may have reached an upstream), and every refused request whose
   ``finished`` entry did, yields exactly one ``UsageRecord`` with that request id;
2. if the gateway process dies between the two entries (SIGKILL, OOM, node lost),
   the drainer *settles* the ``started`` entry once it is older than
   ``GENNAI_USAGE_SETTLE_SECONDS`` (default 900 s, longer than any stream may
   last): status ``interrupted``, detail ``gateway_lost``, the estimated prompt
   tokens (flagged as estimated), 0 completion tokens, no latency;
3. a ``finished`` entry that arrives after its request was settled replaces the
   settlement (a stream that outlived the settle time), so the record is always
   the best knowledge, and still one row;
4. a process killed before its ``started`` entry was sent never called an
   upstream: there is nothing to record (and nothing was consumed). An entry
   sent just before the process died is in the kernel's socket buffers, which
   the kernel still delivers; only a connection reset at that moment (replies
   unread in our receive buffer) could drop it.

Re-draining never duplicates: rows are keyed by ``(ministry, request_id,
created_at)`` (unique; ``created_at`` because the table is partitioned by month,
:mod:`apps.quotas.partitions`, and every entry of a request carries the same
start time), ``finished`` entries are upserted and settlements only inserted if no
row exists. Entries are deleted from the stream only after their rows
committed, so a drainer killed half-way re-reads them.

Rows are written inside each entry's ministry scope (RLS). The entry's
ministry id comes from the gateway's authenticated caller, like a
``TenantTask``'s ``ministry_id`` argument; the drainer itself is platform work.

Durability is Redis's: run it with ``appendonly yes`` (the Helm values do). If
Redis cannot take an entry, the gateway writes the row to PostgreSQL directly
instead (:func:`usage_record_write`), so an outage of the buffer slows requests
down but loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from apps.registry.snapshot import Snapshot

logger = logging.getLogger("gennai.quotas")

STREAM = "gennai:usage:journal"
DEAD_LETTERS = "gennai:usage:dead"
DEFAULT_SETTLE_SECONDS = 900.0
LOST_DETAIL = "gateway_lost"
_BATCH = 1000


@dataclass
class UsageEntry:
    """One request's usage, as journaled (plain values only: it crosses Redis)."""

    request_id: str
    ministry_id: int
    alias_name: str
    status: str = ""
    api_key_id: int | None = None
    user_id: int | None = None
    deployment_id: int | None = None
    revision: int | None = None
    endpoint: str = "chat"
    level: int = 1
    prompt_tokens: int = 0
    prompt_tokens_estimated: bool = False
    completion_tokens: int = 0
    ttft_ms: int | None = None
    latency_ms: int = 0
    detail: str = ""
    created_at: float = field(default_factory=time.time)  # epoch seconds, when the request began
    # Ledger fields (issue 8). Left at their defaults, the drainer fills them: the
    # model from the deployment, the cost from the registry prices (apps.quotas.pricing).
    feature: str = "api"
    team_id: int | None = None  # users' requests only; API keys are charged to no team
    model_name: str = ""
    cost_yen: str = ""  # decimal as text (JSON has no decimals); "" = price it when drained

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, raw: bytes) -> UsageEntry:
        return cls(**json.loads(raw))


def new_request_id() -> str:
    return uuid.uuid4().hex


# --- Writing (the gateway, on its event loop) -------------------------------------------


def _command(*parts: bytes) -> bytes:
    """One command in Redis's wire protocol (RESP)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Appender:
    """A pipelined ``XADD`` connection for one event loop.

    Why not ``redis.asyncio``: measured here, one ``await client.xadd(...)``
    takes ≈0.9 ms of wall time and ≈150 µs of CPU; this writer takes ≈30 µs and
    ≈5 µs, and the ``started`` entry sits in front of every request's first
    token. It speaks just enough of the protocol for ``XADD`` (plus ``AUTH``
    and ``SELECT`` from ``REDIS_URL``); concurrent appends share the connection
    and are answered in order. Any failure closes the connection and fails every
    waiting append, whose callers then write to PostgreSQL directly.
    """

    TIMEOUT = 2.0

    def __init__(self, url: str) -> None:
        from redis.asyncio.connection import parse_url

        self.options = parse_url(url)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.connecting: asyncio.Future[None] | None = None
        self.reading: asyncio.Task[None] | None = None

    async def _connect(self) -> None:
        from .redis_pipe import open_connection

        reader, writer = await open_connection(self.options)
        self.reader, self.writer = reader, writer
        self.reading = asyncio.get_running_loop().create_task(self._read_replies(reader))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("Redis closed the connection")
                if line.startswith(b"$") and line[1:2] != b"-":
                    await reader.readline()  # the entry id
                waiter = self.waiters.popleft()
                if not waiter.done():
                    if line.startswith(b"-"):
                        waiter.set_exception(RedisError(line[1:].decode(errors="replace").strip()))
                    else:
                        waiter.set_result(None)
        except (OSError, ConnectionError, IndexError, asyncio.IncompleteReadError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        if self.reading is not None and self.reading is not asyncio.current_task():
            self.reading.cancel()
        self.reading = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RedisError(f"usage journal connection lost: {exc}"))

    async def send(self, kind: bytes, payload: bytes) -> asyncio.Future[None]:
        """Write one ``XADD`` and return its pending answer, without waiting for it.

        When this returns, the command has left the process: it was handed to the
        kernel in one ``send`` (the transport's buffer is empty). If the socket
        could not take it at once, the bytes would still be in this process's
        memory, so this waits for Redis's answer instead, as :meth:`xadd` does.
        """
        try:
            async with asyncio.timeout(self.TIMEOUT):
                if self.writer is None:
                    if self.connecting is None:
                        self.connecting = asyncio.ensure_future(self._connect())
                    try:
                        await asyncio.shield(self.connecting)
                    finally:
                        if self.connecting is not None and self.connecting.done():
                            self.connecting = None
                assert self.writer is not None
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.waiters.append(waiter)
                self.writer.write(_command(b"XADD", STREAM.encode(), b"*", b"k", kind, b"r", payload))
                if self.writer.transport.get_write_buffer_size():
                    await asyncio.shield(waiter)
                return waiter
        except TimeoutError as exc:
            self._fail(exc)
            raise RedisError("usage journal timed out") from exc
        except OSError as exc:
            self._fail(exc)
            raise RedisError(str(exc)) from exc

    async def answer(self, waiter: asyncio.Future[None]) -> None:
        """Redis's answer to a command written by :meth:`send` (within the timeout)."""
        try:
            async with asyncio.timeout(self.TIMEOUT):
                await asyncio.shield(waiter)
        except TimeoutError as exc:
            self._fail(exc)
            raise RedisError("usage journal timed out") from exc

    async def xadd(self, kind: bytes, payload: bytes) -> None:
        await self.answer(await self.send(kind, payload))


_appenders: dict[int, _Appender] = {}


def _appender() -> _Appender:
    """The journal writer of the running event loop (connections are loop-bound)."""
    key = id(asyncio.get_running_loop())
    appender = _appenders.get(key)
    if appender is None:
        appender = _appenders[key] = _Appender(settings.REDIS_URL)
    return appender


async def journal_started(entry: UsageEntry) -> bool:
    """Append the ``started`` entry; False (and logged) if the journal is unreachable."""
    confirm = await journal_started_sent(entry)
    return await confirm()


async def journal_started_sent(entry: UsageEntry) -> Callable[[], Awaitable[bool]]:
    """Write the ``started`` entry now; the returned ``confirm()`` awaits Redis's answer.

    Why two steps: the ``/v1`` hot path writes the entry, calls the upstream while
    Redis answers (a round trip saved before every first token), and confirms
    before the first token is relayed. When this returns, the entry has left the
    process (see :meth:`_Appender.send`). ``confirm()`` is True once Redis stored
    the entry, False (and logged) if the journal is unreachable or refused it; a
    failure is logged even if nobody confirms (a request cancelled meanwhile).
    """
    appender = _appender()
    try:
        waiter = await appender.send(b"s", entry.encode())
    except (RedisError, OSError):
        logger.warning("usage journal unreachable (started %s)", entry.request_id, exc_info=True)
        return _unconfirmed

    def logged(done: asyncio.Future[None]) -> None:
        failure = None if done.cancelled() else done.exception()
        if failure is not None:
            logger.warning("usage journal lost the started entry of %s: %s", entry.request_id, failure)

    waiter.add_done_callback(logged)

    async def confirm() -> bool:
        try:
            await appender.answer(waiter)
        except (RedisError, OSError):
            return False
        return True

    return confirm


async def _unconfirmed() -> bool:
    return False


async def journal_finished(entry: UsageEntry) -> None:
    """Append the ``finished`` entry, or write the row directly if the journal is unreachable."""
    try:
        await _appender().xadd(b"f", entry.encode())
        return
    except (RedisError, OSError):
        logger.warning("usage journal unreachable, writing %s directly", entry.request_id, exc_info=True)
    from apps.tenancy.connections import db_hop

    await db_hop(usage_record_write, entries=[entry])


# --- Draining (a Celery worker, or tests) -------------------------------------------------


def _record_fields(entry: UsageEntry, snapshot: Snapshot) -> dict[str, Any]:
    from .pricing import cost_yen, model_name_for

    prompt_tokens = max(int(entry.prompt_tokens), 0)
    completion_tokens = max(int(entry.completion_tokens), 0)
    model_name = entry.model_name[:200] or model_name_for(
        deployment_id=entry.deployment_id, snapshot=snapshot
    )
    if entry.cost_yen:
        cost = Decimal(entry.cost_yen)
    else:
        cost = cost_yen(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            deployment_id=entry.deployment_id,
            model_name=model_name,
            snapshot=snapshot,
        )
    return {
        "feature": entry.feature[:16],
        # An API key's usage belongs to no team (teams group people).
        "team_id": None if entry.api_key_id is not None else entry.team_id,
        "model_name": model_name,
        "cost_yen": cost,
        "ministry_id": entry.ministry_id,
        "request_id": uuid.UUID(entry.request_id),
        "api_key_id": entry.api_key_id,
        "user_id": entry.user_id,
        "alias_name": entry.alias_name[:100],
        "deployment_id": entry.deployment_id,
        "revision": entry.revision,
        "endpoint": entry.endpoint[:32],
        "level": entry.level,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_estimated": bool(entry.prompt_tokens_estimated),
        "completion_tokens": completion_tokens,
        "ttft_ms": None if entry.ttft_ms is None else max(int(entry.ttft_ms), 0),
        "latency_ms": max(int(entry.latency_ms), 0),
        "status": entry.status,
        "detail": entry.detail[:200],
        "created_at": datetime.fromtimestamp(entry.created_at, tz=UTC),
    }


_UPDATE_FIELDS = [
    "api_key",
    "user",
    "alias_name",
    "deployment",
    "revision",
    "endpoint",
    "level",
    "prompt_tokens",
    "prompt_tokens_estimated",
    "completion_tokens",
    "ttft_ms",
    "latency_ms",
    "status",
    "detail",
    "feature",
    "team",
    "model_name",
    "cost_yen",
]


def usage_record_write(*, entries: list[UsageEntry], settlement: bool = False) -> None:
    """Write the rows of ``entries``, one transaction and one scope per ministry (idempotent).

    ``finished`` entries replace whatever row has their id (re-drain, or a late
    finish after a settlement); settlements (``settlement=True``) only insert.
    """
    from apps.gateway.models import ApiKey
    from apps.registry.snapshot import get_snapshot
    from apps.tenancy.scope import ministry_scope

    from .models import UsageRecord

    snapshot = get_snapshot()  # prices and model names for the whole batch (no query per row)

    by_ministry: dict[int, list[UsageEntry]] = defaultdict(list)
    for entry in entries:
        by_ministry[entry.ministry_id].append(entry)
    for ministry_id, group in by_ministry.items():
        # Security: each ministry's rows are written in that ministry's scope, so
        # RLS checks every row; a wrong ministry id cannot land in another's table.
        with ministry_scope(ministry_id=ministry_id):
            rows = [UsageRecord(**_record_fields(entry, snapshot)) for entry in group]
            if settlement:
                UsageRecord.objects.bulk_create(rows, ignore_conflicts=True)
            else:
                UsageRecord.objects.bulk_create(
                    rows,
                    update_conflicts=True,
                    # created_at is in the key (monthly partitions): every entry of a
                    # request carries its start time (UsageMeter.created_at), so a
                    # re-drain or a late finish meets the same row.
                    unique_fields=["ministry", "request_id", "created_at"],
                    update_fields=_UPDATE_FIELDS,
                )
    if settlement:
        return
    # last_used_at of the keys (platform-level rows; at most one UPDATE per key and drain).
    last_used: dict[int, float] = {}
    for entry in entries:
        if entry.api_key_id is not None:
            last_used[entry.api_key_id] = max(last_used.get(entry.api_key_id, 0.0), entry.created_at)
    for key_id, at in last_used.items():
        moment = datetime.fromtimestamp(at, tz=UTC)
        ApiKey.objects.filter(pk=key_id).exclude(last_used_at__gte=moment).update(last_used_at=moment)


@dataclass
class DrainResult:
    written: int = 0
    settled: int = 0
    pending: int = 0
    dead: int = 0


def _sync_client() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def _entry_age(entry_id: bytes, now: float) -> float:
    millis = int(entry_id.split(b"-", 1)[0])
    return now - millis / 1000


def _write_or_bury(client: Any, items: list[tuple[bytes, UsageEntry]], *, settlement: bool) -> int:
    """Write ``items``; entries that cannot be written alone go to the dead-letter stream."""
    try:
        usage_record_write(entries=[entry for _id, entry in items], settlement=settlement)
        return 0
    except Exception:
        logger.exception("usage drain: batch failed, retrying entries one by one")
    dead = 0
    for entry_id, entry in items:
        try:
            usage_record_write(entries=[entry], settlement=settlement)
        except Exception:
            logger.exception("usage drain: entry %s moved to %s", entry.request_id, DEAD_LETTERS)
            client.xadd(DEAD_LETTERS, {"id": entry_id, "r": entry.encode()})
            dead += 1
    return dead


def usage_journal_drain(*, client: Any = None, settle_after: float | None = None) -> DrainResult:
    """Move journaled usage into ``UsageRecord`` rows; safe to run concurrently and repeatedly."""
    client = client or _sync_client()
    if settle_after is None:
        settle_after = float(getattr(settings, "GENNAI_USAGE_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS))
    result = DrainResult()
    started: dict[str, tuple[bytes, UsageEntry]] = {}
    start = "-"
    while True:
        page = client.xrange(STREAM, min=start, max="+", count=_BATCH)
        if not page:
            break
        finished: list[tuple[bytes, UsageEntry]] = []
        done_ids: list[bytes] = []
        for entry_id, fields in page:
            try:
                entry = UsageEntry.decode(fields[b"r"])
            except (KeyError, TypeError, ValueError):
                logger.error("usage drain: malformed entry %s dropped", entry_id)
                client.xadd(DEAD_LETTERS, {"id": entry_id, **fields})
                done_ids.append(entry_id)
                result.dead += 1
                continue
            if fields.get(b"k") == b"s":
                started[entry.request_id] = (entry_id, entry)
                continue
            finished.append((entry_id, entry))
            done_ids.append(entry_id)
            begun = started.pop(entry.request_id, None)
            if begun is not None:
                done_ids.append(begun[0])
        if finished:
            dead = _write_or_bury(client, finished, settlement=False)
            result.dead += dead
            result.written += len(finished) - dead
        if done_ids:
            client.xdel(STREAM, *done_ids)
        if len(page) < _BATCH:
            break
        start = "(" + page[-1][0].decode()
    now = time.time()
    lost = [
        (entry_id, entry) for entry_id, entry in started.values() if _entry_age(entry_id, now) >= settle_after
    ]
    if lost:
        for _entry_id, entry in lost:
            entry.status = "interrupted"
            entry.detail = LOST_DETAIL
            entry.completion_tokens = 0
            entry.ttft_ms = None
        dead = _write_or_bury(client, lost, settlement=True)
        client.xdel(STREAM, *[entry_id for entry_id, _entry in lost])
        result.dead += dead
        result.settled = len(lost) - dead
    result.pending = len(started) - len(lost)
    return result
