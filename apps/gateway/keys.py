"""API key format, hashing and the authentication cache of the ``/v1`` hot path.

Key format: ``gn-<prefix><secret>`` where ``prefix + secret`` is
``secrets.token_urlsafe(32)`` (43 characters, 256 bits) and ``prefix`` is its
first 8 characters. Only ``sha256(full key)`` is stored.

Authentication must not cost a database round trip per request (DESIGN.md §4),
so verified key facts are cached per process, like the registry snapshot: an
entry is trusted while the shared version (``VERSION_KEY``, bumped on every
revoke) is unchanged, re-checked at most every ``CHECK_SECONDS``. A revoked key
therefore stops working in every process within about a second. The hash is
still compared (in constant time) on every request, so a cached prefix never
lets a wrong secret in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.core.cache import cache
from django.utils import timezone

from .models import KEY_PREFIX, PREFIX_LENGTH, ApiKey

VERSION_KEY = "gennai:gateway:apikeys:version"
CHECK_SECONDS = 1.0
ENTRY_TTL_SECONDS = 300.0
_MAX_KEY_LENGTH = 128


def generate_key() -> tuple[str, str]:
    """A new ``(plaintext, prefix)``; the plaintext is shown once and never stored."""
    token = secrets.token_urlsafe(32)
    return f"{KEY_PREFIX}{token}", token[:PREFIX_LENGTH]


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def parse_prefix(plaintext: str) -> str | None:
    """The lookup prefix of a presented key, or ``None`` if it cannot be one of ours."""
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > _MAX_KEY_LENGTH:
        return None
    prefix = plaintext[len(KEY_PREFIX) : len(KEY_PREFIX) + PREFIX_LENGTH]
    return prefix if len(prefix) == PREFIX_LENGTH else None


@dataclass(frozen=True)
class KeyInfo:
    """What authentication needs to know about a key (no Django objects)."""

    id: int
    prefix: str
    key_hash: str
    ministry_id: int
    ministry_active: bool
    allowed_aliases: frozenset[str]
    max_level: int
    revoked: bool
    expires_at: datetime | None

    def matches(self, plaintext: str) -> bool:
        return hmac.compare_digest(hash_key(plaintext), self.key_hash)


class KeyState:
    VALID = "valid"
    INVALID = "invalid"
    REVOKED = "revoked"
    EXPIRED = "expired"


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[KeyInfo, float]] = {}
        self.version: int | None = None
        self.checked_at = 0.0


_cache = _Cache()


def _load(prefix: str) -> KeyInfo | None:
    row = ApiKey.objects.select_related("ministry").filter(prefix=prefix).first()
    if row is None:
        return None
    return KeyInfo(
        id=row.pk,
        prefix=row.prefix,
        key_hash=row.key_hash,
        ministry_id=row.ministry_id,
        ministry_active=row.ministry.active,
        allowed_aliases=frozenset(row.allowed_aliases),
        max_level=int(row.max_level),
        revoked=row.revoked_at is not None,
        expires_at=row.expires_at,
    )


def cached_key(plaintext: str) -> KeyInfo | None:
    """The cached facts of this key's prefix if they are fresh, without any I/O (event-loop safe)."""
    prefix = parse_prefix(plaintext)
    if prefix is None:
        return None
    now = time.monotonic()
    if now - _cache.checked_at >= CHECK_SECONDS:
        return None
    entry = _cache.entries.get(prefix)
    if entry is None or now - entry[1] >= ENTRY_TTL_SECONDS:
        return None
    return entry[0]


def lookup_key(plaintext: str) -> KeyInfo | None:
    """The facts of this key's prefix, from the cache or the database (sync: may do I/O)."""
    prefix = parse_prefix(plaintext)
    if prefix is None:
        return None
    now = time.monotonic()
    if now - _cache.checked_at >= CHECK_SECONDS:
        version = int(cache.get(VERSION_KEY) or 0)
        with _cache.lock:
            if _cache.version != version:
                _cache.entries.clear()
                _cache.version = version
            _cache.checked_at = now
    entry = _cache.entries.get(prefix)
    if entry is not None and now - entry[1] < ENTRY_TTL_SECONDS:
        return entry[0]
    info = _load(prefix)
    if info is not None:
        with _cache.lock:
            _cache.entries[prefix] = (info, now)
    return info


def check_key(info: KeyInfo | None, plaintext: str) -> str:
    """Whether ``plaintext`` is a usable key given its cached facts (a :class:`KeyState`)."""
    if info is None or not info.matches(plaintext) or not info.ministry_active:
        return KeyState.INVALID
    if info.revoked:
        return KeyState.REVOKED
    if info.expires_at is not None and info.expires_at <= timezone.now():
        return KeyState.EXPIRED
    return KeyState.VALID


def invalidate() -> None:
    """Make every process re-read keys (call after a revoke commits)."""
    try:
        cache.incr(VERSION_KEY)
    except ValueError:
        cache.set(VERSION_KEY, 1, timeout=None)
    with _cache.lock:
        _cache.entries.clear()
        _cache.checked_at = 0.0


def reset_for_tests() -> None:
    with _cache.lock:
        _cache.entries.clear()
        _cache.version = None
        _cache.checked_at = 0.0


# --- last_used_at, throttled -----------------------------------------------

TOUCH_SECONDS = 60.0
_touched: dict[int, float] = {}


def touch_due(key_id: int) -> bool:
    """True at most once per ``TOUCH_SECONDS`` per key and process (claims the slot)."""
    now = time.monotonic()
    last = _touched.get(key_id)
    if last is not None and now - last < TOUCH_SECONDS:
        return False
    _touched[key_id] = now
    return True
