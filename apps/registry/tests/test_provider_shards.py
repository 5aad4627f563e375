"""The provider's upstream connections are spread over small clients, within the deployment's cap."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from apps.registry.egress import EgressPolicy
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


@pytest.mark.parametrize("total", [1, 2, 15, 16, 17, 40, 64, 1000, 1024])
def test_shards_add_up_to_the_cap_and_none_is_larger_than_16(total: int) -> None:
    pool = _pool(total)
    assert sum(pool.sizes) == total  # max_concurrency × 2 stays the deployment's cap
    assert max(pool.sizes) <= SHARD_CONNECTIONS
    assert max(pool.sizes) - min(pool.sizes) <= 1  # evenly spread
    assert len(pool.clients) == -(-total // SHARD_CONNECTIONS)
    # The cap is what each shard's httpcore pool enforces.
    assert [c._transport._pool._max_connections for c in pool.clients] == pool.sizes  # type: ignore[attr-defined]


def test_each_shard_is_an_egress_guarded_client() -> None:
    from apps.registry.egress import EgressRefused, GuardedTransport

    pool = _pool(40)
    assert all(isinstance(c._transport, GuardedTransport) for c in pool.clients)
    assert all(not c.follow_redirects for c in pool.clients)
    with pytest.raises(EgressRefused):  # the URL-time check still runs before any shard exists
        ShardedClient(
            base_url="http://169.254.169.254/",
            policy=LOOPBACK,
            timeout=httpx.Timeout(5),
            max_connections=40,
        )


def test_least_busy_shard_first_and_released_on_exit() -> None:
    pool = _pool(48)  # 3 shards of 16
    assert pool.acquire() == 0
    assert pool.acquire() == 1
    assert pool.acquire() == 2
    assert pool.acquire() == 0  # all equally busy: the first one
    pool.release(1)
    assert pool.acquire() == 1  # the least busy
    assert pool.in_flight == [2, 1, 1]

    async def leased() -> None:
        async with pool.lease() as client:
            assert client is pool.clients[1]
            assert pool.in_flight == [2, 2, 1]
            raise RuntimeError

    with pytest.raises(RuntimeError):
        asyncio.run(leased())
    assert pool.in_flight == [2, 1, 1]  # released even when the request failed


def test_a_quiet_deployment_reuses_the_first_shard() -> None:
    """One request at a time always lands on shard 0, so its keep-alive connection is reused."""
    pool = _pool(1024)
    for _ in range(5):
        index = pool.acquire()
        assert index == 0
        pool.release(index)
