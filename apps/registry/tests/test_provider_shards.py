"""The provider's upstream connections are spread over small clients, within the deployment's cap."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from apps.registry.egress import EgressPolicy, EgressRefused, GuardedTransport
from apps.registry.providers.openai_compatible import SHARD_CONNECTIONS, ShardedClient

LOOPBACK = EgressPolicy.parse(["127.0.0.0/8"])


def _pool(max_connections: int, shard_connections: int = SHARD_CONNECTIONS) -> ShardedClient:
    return ShardedClient(
        base_url="http://127.0.0.1:9",
        policy=LOOPBACK,
        timeout=httpx.Timeout(5),
        max_connections=max_connections,
        shard_connections=shard_connections,
    )


def _fill(pool: ShardedClient, requests: int) -> list[int]:
    return [pool.acquire() for _ in range(requests)]


@pytest.mark.parametrize("total", [1, 2, 15, 16, 17, 40, 64, 1000, 1024])
def test_shards_add_up_to_the_cap_and_none_is_larger_than_16(total: int) -> None:
    pool = _pool(total)
    assert sum(pool.sizes) == total  # max_concurrency × 2 stays the deployment's cap
    assert max(pool.sizes) <= SHARD_CONNECTIONS
    assert max(pool.sizes) - min(pool.sizes) <= 1  # evenly spread
    assert len(pool.sizes) == -(-total // SHARD_CONNECTIONS)
    _fill(pool, total + 5)  # more requests than the cap: every shard now exists
    assert len(pool.clients) == len(pool.sizes)
    # The cap is what each shard's httpcore pool enforces.
    assert [c._transport._pool._max_connections for c in pool.clients] == pool.sizes  # type: ignore[attr-defined]


def test_each_shard_is_an_egress_guarded_client() -> None:
    pool = _pool(40)
    _fill(pool, 40)
    assert len(pool.clients) == 3
    assert all(isinstance(c._transport, GuardedTransport) for c in pool.clients)
    assert all(not c.follow_redirects for c in pool.clients)
    with pytest.raises(EgressRefused):  # the URL-time check runs before any shard exists
        ShardedClient(
            base_url="http://169.254.169.254/", policy=LOOPBACK, timeout=httpx.Timeout(5), max_connections=40
        )


def test_shards_are_created_only_when_the_busiest_free_one_is_full() -> None:
    pool = _pool(6, shard_connections=2)  # 3 shards of 2 connections
    assert pool.sizes == [2, 2, 2] and len(pool.clients) == 1
    assert _fill(pool, 2) == [0, 0]  # shard 0 until it is full
    assert len(pool.clients) == 1
    assert _fill(pool, 4) == [1, 1, 2, 2]  # then the next shard, created on demand
    assert pool.in_flight == [2, 2, 2]
    assert pool.acquire() == 0  # all full: queue in the least busy (the first of equals)
    pool.release(1)
    pool.release(1)
    assert pool.acquire() == 1  # the least busy
    assert pool.in_flight == [3, 1, 2]


def test_lease_releases_its_shard_even_when_the_request_fails() -> None:
    pool = _pool(48)

    async def leased() -> None:
        async with pool.lease() as client:
            assert client is pool.clients[0]
            assert pool.in_flight == [1]
            raise RuntimeError

    with pytest.raises(RuntimeError):
        asyncio.run(leased())
    assert pool.in_flight == [0]


def test_a_quiet_deployment_reuses_the_first_shard_and_a_huge_cap_costs_nothing_upfront() -> None:
    pool = _pool(200_000)  # a deployment with max_concurrency 100,000
    assert len(pool.clients) == 1
    for _ in range(5):
        index = pool.acquire()
        assert index == 0  # one request at a time: shard 0's keep-alive connection is reused
        pool.release(index)
    assert len(pool.clients) == 1
