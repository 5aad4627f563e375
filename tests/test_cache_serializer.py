"""The cache never unpickles, and takes only values signed for their key (gennai/cache_serializer.py)."""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache, caches

from gennai.cache_serializer import SafeRedisSerializer, SignedRedisCache, SignedRedisCacheClient

# Filled only if a pickle planted in the cache is ever unpickled.
UNPICKLED: list[int] = []


def _ran(value: int) -> None:
    UNPICKLED.append(value)


class _Planted:
    """Unpickling this appends to UNPICKLED: a stand-in for a payload that runs code."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ran, (1,))


@pytest.fixture
def redis_cache() -> Any:
    """Keys a test used, deleted afterwards (the tests run against the real Redis cache)."""
    keys: list[str] = []
    yield keys
    for key in keys:
        cache.delete(key)


def test_settings_use_the_signed_cache() -> None:
    assert settings.CACHES["default"]["BACKEND"] == "gennai.cache_serializer.SignedRedisCache"
    assert isinstance(cache._cache, SignedRedisCacheClient)  # type: ignore[attr-defined]
    assert isinstance(caches["default"], SignedRedisCache)


def _raw(key: str) -> Any:
    """The client and full Redis key of cache key ``key`` (to read or plant what Redis holds)."""
    full = cache.make_key(key)
    return cache._cache.get_client(full, write=True), full  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value",
    [
        0,
        -7,
        2**62,
        True,
        1.5,
        "出張規程",
        "123",
        b"\x89PNG\r\n\x1a\n\x00binary",
        b"",
        b"123",
        None,
        [["staff", 1700000000.5]],
        {"grants": [["auditor", 1.0]], "日本語": "値"},
    ],
)
def test_values_round_trip_through_redis(redis_cache: list[str], value: Any) -> None:
    key = "gennai:test:serializer"
    redis_cache.append(key)
    cache.set(key, value, timeout=60)
    got = cache.get(key, "missing")
    assert got == value and type(got) is type(value)


def test_tuples_come_back_as_lists_and_unencodable_values_are_refused(redis_cache: list[str]) -> None:
    key = "gennai:test:serializer:tuple"
    redis_cache.append(key)
    cache.set(key, ("a", 1), timeout=60)
    assert cache.get(key) == ["a", 1]
    with pytest.raises(TypeError):
        cache.set(key, {"when": object()}, timeout=60)
    with pytest.raises(ValueError):
        cache.set(key, float("nan"), timeout=60)
    assert cache.get(key) == ["a", 1], "a refused value must not replace the stored one"


def test_incr_stays_an_atomic_redis_counter(redis_cache: list[str]) -> None:
    key = "gennai:test:serializer:counter"
    redis_cache.append(key)
    assert cache.add(key, 1, timeout=60)
    assert cache.incr(key, 41) == 42
    client, full = _raw(key)
    assert client.get(full) == b"42"


def test_a_planted_pickle_is_never_unpickled(
    redis_cache: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    key = "gennai:test:serializer:planted"
    redis_cache.append(key)
    payload = pickle.dumps(_Planted())
    assert pickle.loads(payload) is None and UNPICKLED == [1], "the payload runs code"  # noqa: S301
    UNPICKLED.clear()
    # Written straight into Redis, as someone with access to it (or an older release) would.
    client, full = _raw(key)
    client.set(full, payload)
    with caplog.at_level(logging.WARNING, logger="gennai.cache"):
        assert cache.get(key) is None
    assert UNPICKLED == []
    assert "unknown format" in caplog.text


def test_a_value_moved_from_another_key_tampered_or_expired_is_a_miss(
    redis_cache: list[str], settings: Any
) -> None:
    """Someone who can write to Redis cannot grant anything either: a signed value copied from
    another key (another user's grants), a changed byte, an expired value put back, or values
    signed under another SECRET_KEY all read as a miss."""
    admin, mine = "gennai:test:grants:admin", "gennai:test:grants:mine"
    redis_cache += [admin, mine]
    cache.set(admin, {"grants": [["ministry_admin", 9e18]]}, timeout=60)
    client, admin_full = _raw(admin)
    stolen = client.get(admin_full)
    _client, mine_full = _raw(mine)
    client.set(mine_full, stolen)
    assert cache.get(admin) == {"grants": [["ministry_admin", 9e18]]}
    assert cache.get(mine) is None
    tampered = bytearray(stolen)
    tampered[-3] ^= 1
    client.set(admin_full, bytes(tampered))
    assert cache.get(admin) is None
    serializer = SafeRedisSerializer()
    old = serializer.dumps({"until": 9e18}, key=admin_full, timeout=60)
    assert isinstance(old, bytes)
    assert serializer.loads(old, key=admin_full) == {"until": 9e18}
    later = time.time() + 120
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gennai.cache_serializer.time.time", lambda: later)
        assert serializer.loads(old, key=admin_full) is None  # put back after its time
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789-abcdefghij"
    assert serializer.loads(old, key=admin_full) is None


def test_loads_refuses_what_dumps_never_writes() -> None:
    serializer = SafeRedisSerializer()
    key = ":1:gennai:test"
    assert serializer.loads(b"\x80\x05K\x01.", key=key) is None  # pickle of 1
    assert serializer.loads(b'J"unsigned"', key=key) is None
    assert serializer.loads(b"S" + b"\x00" * 30, key=key) is None
    assert serializer.loads(b"17", key=key) == 17
    assert serializer.dumps(5, key=key, timeout=None) == 5
    signed = serializer.dumps(b"abc", key=key, timeout=None)
    assert isinstance(signed, bytes) and signed.startswith(b"S") and signed.endswith(b"Babc")
    assert serializer.loads(signed, key=key) == b"abc"
