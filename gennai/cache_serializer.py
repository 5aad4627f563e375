"""The cache's serializer: JSON and raw bytes, never pickle.

Why: Django's ``RedisCache`` pickles every value that is not an ``int``, and
``pickle.loads`` runs code named by the data. Whoever can write one key to the
cache's Redis (a neighbour on a shared Redis, a leaked ``REDIS_URL``, a
mis-set ACL) would then run code in every web process and worker that reads
it. With this serializer a cache value is only ever data: what the platform
caches (flags, counters, JWKS, claims-check and grant entries, digests,
rendered page images) is JSON or bytes.

Wire format (what Redis holds):

* ``int`` (not ``bool``): the number as text, as Django stores it, so
  ``cache.incr``/``decr`` stay atomic Redis ``INCRBY``;
* ``bytes``: ``b"B"`` + the bytes;
* anything else: ``b"J"`` + compact UTF-8 JSON (``NaN``/``Infinity`` refused).
  Tuples come back as lists. A value JSON cannot hold (a ``datetime``, a model
  instance) raises :class:`TypeError` at ``cache.set``: cache its JSON form.

A value in any other format (a pickle written before this serializer, or
planted) is never decoded: it reads as a miss (``None``), with a warning.
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger("gennai.cache")

BYTES_TAG = b"B"
JSON_TAG = b"J"


class SafeRedisSerializer:
    """``dumps``/``loads`` for ``django.core.cache.backends.redis.RedisCache`` (``OPTIONS["serializer"]``)."""

    def dumps(self, obj: Any) -> int | bytes:
        """Encode ``obj`` for Redis: ``int`` as is, ``bytes`` tagged, the rest as tagged JSON."""
        if type(obj) is int:
            return obj
        if isinstance(obj, bytes | bytearray | memoryview):
            return BYTES_TAG + bytes(obj)
        return JSON_TAG + json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        """Decode what :meth:`dumps` wrote.

        Security: nothing here can run code. Data in any other format (for
        instance a pickle) is not decoded; it reads as a cache miss.
        """
        tag = data[:1]
        if tag == JSON_TAG:
            return json.loads(data[1:])
        if tag == BYTES_TAG:
            return bytes(data[1:])
        try:
            return int(data)
        except ValueError:
            logger.warning("cache: a value in an unknown format (%d bytes) was read as a miss", len(data))
            return None
