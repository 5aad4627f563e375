"""The usage journal: exactly one UsageRecord per request, whatever order and however often drained."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from apps.quotas import journal
from apps.quotas.journal import UsageEntry, usage_journal_drain
from apps.quotas.models import UsageRecord
from apps.tenancy.scope import ministry_scope


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[redis.Redis]:
    """A journal stream of this test's own (the Redis of the test run is shared)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    name = f"test:usage:{uuid.uuid4().hex}"
    monkeypatch.setattr(journal, "STREAM", name)
    monkeypatch.setattr(journal, "DEAD_LETTERS", name + ":dead")
    yield client
    client.delete(name, name + ":dead")


def add(client: redis.Redis, kind: bytes, entry: UsageEntry) -> None:
    client.xadd(journal.STREAM, {"k": kind, "r": entry.encode()})


def rows(ministry: Any) -> list[UsageRecord]:
    with ministry_scope(ministry_id=ministry.pk):
        return list(UsageRecord.objects.order_by("id"))


def entry(ministry: Any, **fields: Any) -> UsageEntry:
    return UsageEntry(
        request_id=fields.pop("request_id", uuid.uuid4().hex),
        ministry_id=ministry.pk,
        alias_name="standard-chat",
        **fields,
    )


def test_drain_writes_each_ministry_in_its_scope_and_is_idempotent(
    stream: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, b = ministries
    served = entry(a, level=2, prompt_tokens=12, prompt_tokens_estimated=True)
    add(stream, b"s", served)
    served.status, served.completion_tokens, served.latency_ms = "ok", 64, 80
    add(stream, b"f", served)
    refused = entry(b, status="refused", detail="classification", level=3)
    add(stream, b"f", refused)

    result = usage_journal_drain()
    assert (result.written, result.settled, result.pending) == (2, 0, 0)
    [row_a] = rows(a)
    assert (row_a.request_id.hex, row_a.status, row_a.completion_tokens) == (served.request_id, "ok", 64)
    assert (row_a.prompt_tokens, row_a.prompt_tokens_estimated) == (12, True)
    assert abs(row_a.created_at.timestamp() - served.created_at) < 0.01  # the request's time
    [row_b] = rows(b)
    assert (row_b.status, row_b.detail, row_b.level) == ("refused", "classification", 3)
    assert stream.xlen(journal.STREAM) == 0

    # A drainer that died after committing but before deleting re-reads the entry: no duplicate.
    add(stream, b"f", served)
    usage_journal_drain()
    assert [r.request_id.hex for r in rows(a)] == [served.request_id]


def test_started_without_finished_is_settled_once_it_is_old(
    stream: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    lost = entry(a, prompt_tokens=9, prompt_tokens_estimated=True)
    add(stream, b"s", lost)

    result = usage_journal_drain(settle_after=3600)
    assert (result.written, result.settled, result.pending) == (0, 0, 1)
    assert rows(a) == []

    result = usage_journal_drain(settle_after=0)
    assert (result.settled, result.pending) == (1, 0)
    [row] = rows(a)
    assert (row.status, row.detail) == ("interrupted", journal.LOST_DETAIL)
    assert (row.prompt_tokens, row.prompt_tokens_estimated, row.completion_tokens) == (9, True, 0)
    assert stream.xlen(journal.STREAM) == 0

    # The request was alive after all (a stream longer than the settle time): its finish wins.
    lost.status, lost.completion_tokens, lost.prompt_tokens = "ok", 30, 11
    lost.prompt_tokens_estimated = False
    add(stream, b"f", lost)
    usage_journal_drain(settle_after=0)
    [row] = rows(a)
    assert (row.status, row.detail, row.completion_tokens, row.prompt_tokens) == ("ok", "", 30, 11)


def test_settlement_never_replaces_a_finished_row(stream: redis.Redis, ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    done = entry(a, status="ok", completion_tokens=5)
    add(stream, b"f", done)
    usage_journal_drain()
    add(stream, b"s", done)  # e.g. a started entry replayed from a restored Redis
    assert usage_journal_drain(settle_after=0).settled == 1
    [row] = rows(a)
    assert (row.status, row.completion_tokens) == ("ok", 5)


def test_started_and_finished_pages_apart_are_matched(
    stream: redis.Redis, ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = ministries
    monkeypatch.setattr(journal, "_BATCH", 2)
    first, second = entry(a), entry(a)
    add(stream, b"s", first)
    add(stream, b"s", second)
    for item in (first, second):
        item.status = "ok"
        add(stream, b"f", item)
    result = usage_journal_drain(settle_after=0)
    assert (result.written, result.settled) == (2, 0)
    assert sorted(r.status for r in rows(a)) == ["ok", "ok"]


@pytest.mark.django_db(transaction=True)  # foreign keys are checked at commit
def test_unwritable_entries_go_to_dead_letters_and_the_rest_is_written(
    stream: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    good = entry(a, status="ok")
    bad = entry(a, status="ok", deployment_id=987654321)  # no such deployment: the FK refuses it
    add(stream, b"f", good)
    add(stream, b"f", bad)
    stream.xadd(journal.STREAM, {"k": b"f", "r": b"not json"})
    result = usage_journal_drain()
    assert (result.dead, result.written) == (2, 1)
    assert [r.request_id.hex for r in rows(a)] == [good.request_id]
    assert stream.xlen(journal.DEAD_LETTERS) == 2
    assert stream.xlen(journal.STREAM) == 0


@pytest.mark.django_db(transaction=True)
def test_unreachable_journal_writes_the_row_directly(
    ministries: tuple[Any, Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis down: the finished entry is written to PostgreSQL at once instead (nothing lost)."""
    from tests.support.fake_upstream import closed_port_url

    a, _ = ministries
    settings.REDIS_URL = closed_port_url().replace("http://", "redis://")
    monkeypatch.setattr(journal, "_appenders", {})
    done = entry(a, status="ok", completion_tokens=3)

    async def write() -> bool:
        started = await journal.journal_started(done)
        await journal.journal_finished(done)
        return started

    t0 = time.monotonic()
    assert asyncio.run(write()) is False
    assert time.monotonic() - t0 < 10
    [row] = rows(a)
    assert (row.request_id.hex, row.completion_tokens) == (done.request_id, 3)


def test_drain_is_scheduled(settings: Any) -> None:
    from apps.quotas.tasks import usage_journal_drain_task

    schedule = settings.CELERY_BEAT_SCHEDULE.values()
    [entry] = [e for e in schedule if e["task"] == usage_journal_drain_task.name]
    assert entry["schedule"] <= 5


def test_appender_selects_the_database_and_reports_redis_errors(
    stream: redis.Redis, ministries: tuple[Any, Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = ministries
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    settings.REDIS_URL = base + "/3"
    monkeypatch.setattr(journal, "_appenders", {})
    other_db = redis.Redis.from_url(settings.REDIS_URL)
    try:

        async def append_twice() -> tuple[bool, bool]:
            ok = await journal.journal_started(entry(a))
            other_db.set(journal.STREAM, "not a stream")  # XADD now answers -WRONGTYPE
            refused = await journal.journal_started(entry(a))
            return ok, refused

        assert asyncio.run(append_twice()) == (True, False)
        assert stream.xlen(journal.STREAM) == 0  # nothing in database 0
    finally:
        other_db.delete(journal.STREAM)


def test_started_entry_leaves_the_process_before_its_answer_is_awaited(
    stream: redis.Redis, ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path calls the upstream right after ``journal_started_sent``: the entry must
    already be on its way to Redis then, not waiting for the event loop to run again."""
    a, _ = ministries
    monkeypatch.setattr(journal, "_appenders", {})
    first, second = entry(a), entry(a)

    async def run() -> bool:
        await journal.journal_started(first)  # connects
        confirm = await journal.journal_started_sent(second)
        deadline = time.monotonic() + 5
        while stream.xlen(journal.STREAM) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # blocks the event loop on purpose: Redis must get it anyway
        assert stream.xlen(journal.STREAM) == 2
        return await confirm()

    assert asyncio.run(run()) is True
    written: Any = stream.xrange(journal.STREAM, count=2)
    fields = written[1][1]
    assert (fields[b"k"], UsageEntry.decode(fields[b"r"]).request_id) == (b"s", second.request_id)
