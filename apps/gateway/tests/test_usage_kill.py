"""Nothing lost: a real web process is SIGKILLed mid-stream, and every request that reached the
upstream still ends up as exactly one usage record (see apps/quotas/journal.py for the contract)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx
import redis

from apps.quotas import journal
from apps.quotas.journal import usage_journal_drain
from apps.quotas.models import UsageRecord
from apps.tenancy.scope import ministry_scope
from tests.support.web_process import WebProcess

from .conftest import World


def _records(ministry: Any) -> list[UsageRecord]:
    with ministry_scope(ministry_id=ministry.pk):
        return list(UsageRecord.objects.order_by("id"))


def test_sigkill_mid_stream_loses_no_usage_and_redrain_adds_none(
    transactional_db: None, world: World, make_key: Any, settings: Any
) -> None:
    redis.Redis.from_url(settings.REDIS_URL).delete(journal.STREAM)
    _key, plaintext = make_key()
    headers = {"Authorization": f"Bearer {plaintext}"}
    body = {"model": "standard-chat", "messages": [{"role": "user", "content": "x"}], "stream": True}
    finished, in_flight = 3, 3
    with WebProcess(pool_max=4) as web:
        url = web.url + "/v1/chat/completions"
        for _ in range(finished):
            with httpx.stream("POST", url, headers=headers, json=body, timeout=10) as response:
                assert response.status_code == 200
                assert response.read().endswith(b"data: [DONE]\n\n")
        world.primary.tokens, world.primary.delay = 400, 0.02  # 8-second answers
        first_chunk = threading.Barrier(in_flight + 1, timeout=15)
        cut: list[BaseException] = []

        def stream_until_killed() -> None:
            try:
                with httpx.stream("POST", url, headers=headers, json=body, timeout=15) as response:
                    lines = response.iter_lines()
                    assert next(lines).startswith("data: ")
                    first_chunk.wait()
                    for _line in lines:
                        pass
            except httpx.HTTPError as exc:
                cut.append(exc)

        clients = [threading.Thread(target=stream_until_killed) for _ in range(in_flight)]
        for client in clients:
            client.start()
        first_chunk.wait()  # every stream is relaying: the gateway dies mid-answer
        os.kill(web.pid, signal.SIGKILL)
        for client in clients:
            client.join(timeout=15)
        assert len(cut) == in_flight, "the streams should have been cut by the kill"
    assert world.primary.requests == finished + in_flight

    # The completed requests are on the books at once; the killed ones once they are old enough.
    early = usage_journal_drain(settle_after=3600)
    assert (early.written, early.pending) == (finished, in_flight)
    time.sleep(0.01)
    late = usage_journal_drain(settle_after=0)
    assert late.settled == in_flight
    rows = _records(world.ministry_a)
    assert len(rows) == finished + in_flight
    assert len({row.request_id for row in rows}) == len(rows)
    assert sorted(row.status for row in rows) == ["interrupted"] * in_flight + ["ok"] * finished
    for row in rows:
        if row.status == "interrupted":
            assert row.detail == journal.LOST_DETAIL and row.prompt_tokens > 0 and row.prompt_tokens_estimated
        else:
            assert (row.completion_tokens, row.prompt_tokens, row.prompt_tokens_estimated) == (5, 7, False)

    # Draining again (a second worker, a retry) never adds a row.
    usage_journal_drain(settle_after=0)
    assert len(_records(world.ministry_a)) == finished + in_flight
