"""The cache never unpickles: values are JSON or bytes (gennai/cache_serializer.py), on the real Redis."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache

from gennai.cache_serializer import SafeRedisSerializer

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


def test_settings_use_the_safe_serializer() -> None:
    options = settings.CACHES["default"].get("OPTIONS", {})
    assert options.get("serializer") == "gennai.cache_serializer.SafeRedisSerializer"
    assert isinstance(cache._cache._serializer, SafeRedisSerializer)  # type: ignore[attr-defined]


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
    raw = cache._cache.get_client(key).get(cache.make_key(key))  # type: ignore[attr-defined]
    assert raw == b"42"


def test_a_planted_pickle_is_never_unpickled(
    redis_cache: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    key = "gennai:test:serializer:planted"
    redis_cache.append(key)
    payload = pickle.dumps(_Planted())
    assert pickle.loads(payload) is None and UNPICKLED == [1], "the payload runs code"  # noqa: S301
    UNPICKLED.clear()
    # Written straight into Redis, as someone with access to it (or an older release) would.
    cache._cache.get_client(key, write=True).set(cache.make_key(key), payload)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="gennai.cache"):
        assert cache.get(key) is None
    assert UNPICKLED == []
    assert "unknown format" in caplog.text


def test_loads_refuses_what_dumps_never_writes() -> None:
    serializer = SafeRedisSerializer()
    assert serializer.loads(b"\x80\x05K\x01.") is None  # pickle of 1
    assert serializer.loads(b"X{}") is None
    assert serializer.loads(b"17") == 17
    assert serializer.dumps(b"abc") == b"Babc" and serializer.dumps("a") == b'J"a"'
