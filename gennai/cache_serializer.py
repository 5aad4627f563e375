"""The cache: values are data (JSON or bytes, never pickles), signed together with their key.

Why: Django's ``RedisCache`` pickles every value that is not an ``int``, and
``pickle.loads`` runs code named by the data. Whoever can write one key to the
cache's Redis (a neighbour on a shared Redis, a leaked ``REDIS_URL``, a
mis-set ACL) would then run code in every web process and worker that reads
it. Without pickles they could still plant *data*: a local-grant entry making
them ministry admin, a claims-check entry that never expires, a JWKS. So every
value but a plain ``int`` is also signed with a key derived from
``SECRET_KEY``, over the full Redis key, an expiry and the value: a planted
value, one moved from another key (another user's grants), or an old one put
back after it expired, reads as a miss.

Wire format (what Redis holds):

* ``int`` (not ``bool``): the number as text, as Django stores it, so
  ``cache.incr``/``decr`` stay atomic Redis ``INCRBY``. Integers are not signed
  (Redis must be able to add to them): the platform keeps only flags and
  counters in them (stop flags, login-failure counts, alert markers, replay
  markers), never a grant;
* anything else: ``b"S"`` + HMAC-SHA256 (first 16 bytes) + expiry (8 bytes,
  Unix seconds, 0 = none) + the body, where the body is ``b"B"`` + bytes, or
  ``b"J"`` + compact UTF-8 JSON (``NaN``/``Infinity`` refused; tuples come
  back as lists; a value JSON cannot hold raises :class:`TypeError` at
  ``cache.set``: cache its JSON form).

``cache.touch`` extends only Redis's TTL, not a signed value's own expiry (set
the value again instead); the platform does not use it.

Anything else read from Redis (a pickle written before this module, a planted
or moved value, a wrong signature, an expired one) is never decoded: it reads
as a miss (``None``), with a warning on the ``gennai.cache`` logger.
"""

from __future__ import annotations

import hmac
import json
import logging
import struct
import time
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.crypto import salted_hmac

logger = logging.getLogger("gennai.cache")

SIGNED_TAG = b"S"
BYTES_TAG = b"B"
JSON_TAG = b"J"
#: HMAC purpose (Django's ``salted_hmac`` key salt): these signatures serve the cache only.
KEY_SALT = "gennai.cache.value"
MAC_BYTES = 16
_EXPIRY = struct.Struct(">Q")
_HEAD = 1 + MAC_BYTES + _EXPIRY.size


def _text_key(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


def _mac(key: Any, signed: bytes) -> bytes:
    return salted_hmac(KEY_SALT, _text_key(key) + b"\x00" + signed, algorithm="sha256").digest()[:MAC_BYTES]


class SafeRedisSerializer:
    """Encodes cache values as described in the module docstring, for one Redis key at a time."""

    def dumps(self, obj: Any, *, key: Any, timeout: int | None) -> int | bytes:
        """Encode ``obj`` for ``key``: ``int`` as is, anything else signed, expiring with ``timeout``."""
        if type(obj) is int:
            return obj
        if isinstance(obj, bytes | bytearray | memoryview):
            body = BYTES_TAG + bytes(obj)
        else:
            body = (
                JSON_TAG
                + json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            )
        expiry = int(time.time()) + int(timeout) + 1 if timeout else 0
        signed = _EXPIRY.pack(expiry) + body
        return SIGNED_TAG + _mac(key, signed) + signed

    def loads(self, data: bytes | str, *, key: Any) -> Any:
        """Decode what :meth:`dumps` wrote for ``key``.

        Security: nothing here can run code, and only a value signed for this
        very key and not past its expiry is returned; anything else (a pickle,
        a planted, moved, tampered or expired value) reads as a miss.
        """
        if isinstance(data, str):  # a client made with decode_responses (not Django's)
            data = data.encode()
        if data[:1] == SIGNED_TAG and len(data) > _HEAD:
            signed = data[1 + MAC_BYTES :]
            if hmac.compare_digest(data[1 : 1 + MAC_BYTES], _mac(key, signed)):
                (expiry,) = _EXPIRY.unpack_from(signed)
                body = signed[_EXPIRY.size :]
                if expiry and expiry < time.time():
                    return self._miss("an expired value", data)
                if body[:1] == BYTES_TAG:
                    return bytes(body[1:])
                if body[:1] == JSON_TAG:
                    return json.loads(body[1:])
            return self._miss("a value with a wrong signature", data)
        try:
            return int(data)
        except ValueError:
            return self._miss("a value in an unknown format", data)

    def _miss(self, what: str, data: bytes) -> None:
        logger.warning("cache: %s (%d bytes) was read as a miss", what, len(data))
        return None


class SignedRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client, with each value encoded for its own key (:class:`SafeRedisSerializer`)."""

    def __init__(self, servers: Any, **options: Any) -> None:
        options.pop("serializer", None)
        super().__init__(servers, **options)
        self._signed = SafeRedisSerializer()

    def add(self, key: Any, value: Any, timeout: Any) -> bool:
        client = self.get_client(key, write=True)
        encoded = self._signed.dumps(value, key=key, timeout=timeout)
        if timeout == 0:
            if ret := bool(client.set(key, encoded, nx=True)):
                client.delete(key)
            return ret
        return bool(client.set(key, encoded, ex=timeout, nx=True))

    def get(self, key: Any, default: Any) -> Any:
        value = self.get_client(key).get(key)
        return default if value is None else self._signed.loads(value, key=key)

    def set(self, key: Any, value: Any, timeout: Any) -> None:
        client = self.get_client(key, write=True)
        encoded = self._signed.dumps(value, key=key, timeout=timeout)
        if timeout == 0:
            client.delete(key)
        else:
            client.set(key, encoded, ex=timeout)

    def get_many(self, keys: Any) -> dict[Any, Any]:
        values = self.get_client(None).mget(keys)
        return {k: self._signed.loads(v, key=k) for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, data: Any, timeout: Any) -> None:
        pipeline = self.get_client(None, write=True).pipeline()
        pipeline.mset({k: self._signed.dumps(v, key=k, timeout=timeout) for k, v in data.items()})
        if timeout is not None:
            for key in data:
                pipeline.expire(key, timeout)
        pipeline.execute()


class SignedRedisCache(RedisCache):
    """``CACHES`` backend: Django's ``RedisCache`` over :class:`SignedRedisCacheClient`."""

    def __init__(self, server: Any, params: Any) -> None:
        super().__init__(server, params)
        self._class = SignedRedisCacheClient
