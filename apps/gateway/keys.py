"""API key format, hashing and the authentication cache of the ``/v1`` hot path.

Key format: ``gn-<prefix><secret>`` where ``prefix + secret`` is
``secrets.token_urlsafe(32)`` (43 characters, 256 bits) and ``prefix`` is its
first 8 characters. Only ``sha256(full key)`` is stored.

Authentication must not cost a database round trip per request (DESIGN.md §4),
so verified key facts are cached per process, like the registry snapshot. The
cache cannot outlive a revocation (invariant 11, docs/adr/0005):

* every change a key's facts derive from — a revoke (also a retried one), a
  ministry deactivated, the creator's membership losing the ministry-admin role
  or removed — bumps the ``gateway.api_keys`` version in PostgreSQL
  (:mod:`apps.tenancy.versions`) *in the transaction of the change*;
* :func:`lookup_key` re-reads that version at most every ``check_seconds()``
  (0.5 s) and drops every entry when it moved, so a revocation is seen by every
  process within about a second, whatever happened to Redis;
* an entry older than ``max_age_seconds()`` is reloaded regardless;
* :func:`cached_key` answers only from entries that are still within both
  bounds, without any I/O, so it is safe on the event loop.

The hash is still compared (in constant time) on every request, so a cached
prefix never lets a wrong secret in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.tenancy import versions
from apps.tenancy.models import Membership, Role

from .models import KEY_PREFIX, PREFIX_LENGTH, ApiKey

VERSION_NAME = versions.API_KEYS
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
    # The creator still holds the ministry-admin role in the key's ministry
    # (always true for a key issued by a platform operator from the command line).
    creator_is_admin: bool

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
        # Moves whenever the entries are dropped: a load that started before the
        # drop must not store its (possibly pre-revocation) facts after it.
        self.generation = 0

    def clear(self) -> None:
        """Drop every entry (caller holds ``lock``)."""
        self.entries.clear()
        self.generation += 1


_cache = _Cache()


def _load(prefix: str) -> KeyInfo | None:
    creator_is_admin = Exists(
        Membership.objects.filter(
            user_id=OuterRef("created_by_id"),
            ministry_id=OuterRef("ministry_id"),
            user__is_active=True,
            roles__contains=[Role.MINISTRY_ADMIN],
        )
    )
    row = (
        ApiKey.objects.select_related("ministry")
        .annotate(creator_is_admin=creator_is_admin)
        .filter(prefix=prefix)
        .first()
    )
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
        creator_is_admin=row.platform_issued or bool(row.creator_is_admin),
    )


def cached_key(plaintext: str) -> KeyInfo | None:
    """The cached facts of this key's prefix if they are fresh, without any I/O (event-loop safe).

    ``None`` means "ask :func:`lookup_key`": the version was not checked within
    ``check_seconds()``, or the entry is missing or older than ``max_age_seconds()``.
    """
    prefix = parse_prefix(plaintext)
    if prefix is None:
        return None
    now = time.monotonic()
    if now - _cache.checked_at >= versions.check_seconds():
        return None
    entry = _cache.entries.get(prefix)
    if entry is None or now - entry[1] >= versions.max_age_seconds():
        return None
    return entry[0]


def check_version(now: float | None = None) -> None:
    """Re-read the ``gateway.api_keys`` version now (sync: I/O); forget every entry if it moved.

    ``now`` is the moment the check counts from, taken before the read.
    """
    now = time.monotonic() if now is None else now
    version = versions.read_version(VERSION_NAME)
    with _cache.lock:
        if _cache.version != version:
            _cache.clear()
            _cache.version = version
        _cache.checked_at = now


def version_check_due() -> bool:
    """Whether the version check is past half its interval: time to re-check in the background.

    The ``/v1`` hot path re-checks ahead (:mod:`apps.gateway.endpoints`), so that
    no request waits for the check; :func:`cached_key` still answers nothing once
    ``check_seconds()`` passed without one, so the bound on a revocation is unchanged.
    """
    return time.monotonic() - _cache.checked_at >= versions.check_seconds() / 2


def lookup_key(plaintext: str) -> KeyInfo | None:
    """The facts of this key's prefix, from the cache or the database (sync: may do I/O).

    Security: re-reads the ``gateway.api_keys`` version from PostgreSQL when the
    last check is older than ``check_seconds()`` and forgets every entry if it
    moved; that is what bounds how long a revoked key keeps working.
    """
    prefix = parse_prefix(plaintext)
    if prefix is None:
        return None
    now = time.monotonic()
    if now - _cache.checked_at >= versions.check_seconds():
        check_version(now)
    entry = _cache.entries.get(prefix)
    if entry is not None and now - entry[1] < versions.max_age_seconds():
        return entry[0]
    generation = _cache.generation
    info = _load(prefix)
    if info is not None:
        with _cache.lock:
            if _cache.generation == generation:  # no invalidation arrived while we loaded
                _cache.entries[prefix] = (info, now)
    return info


def check_key(info: KeyInfo | None, plaintext: str) -> str:
    """Whether ``plaintext`` is a usable key given its cached facts (a :class:`KeyState`).

    Security, in this order: unknown prefix, wrong secret or a deactivated
    ministry → ``INVALID`` (nothing is revealed about the key); revoked, or its
    creator no longer a ministry admin there → ``REVOKED``; past (or without) an
    expiry → ``EXPIRED``.
    """
    if info is None or not info.matches(plaintext) or not info.ministry_active:
        return KeyState.INVALID
    if info.revoked or not info.creator_is_admin:
        return KeyState.REVOKED
    if info.expires_at is None or info.expires_at <= timezone.now():
        return KeyState.EXPIRED
    return KeyState.VALID


def _drop_local() -> None:
    with _cache.lock:
        _cache.clear()
        _cache.checked_at = 0.0


def invalidate() -> None:
    """Make every process re-read key facts: call *inside* the transaction of the change.

    The version bump commits with the change (PostgreSQL, not Redis); this
    process also forgets its entries right after commit. Calling it again for
    the same change (a retried revoke) invalidates again.
    """
    versions.bump_version(VERSION_NAME)
    transaction.on_commit(_drop_local)


def reset_for_tests() -> None:
    with _cache.lock:
        _cache.clear()
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
