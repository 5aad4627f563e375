"""Invalidation versions of process-local caches, kept in PostgreSQL.

Two caches sit on the hot path of every request and must never outlive a
revocation (DESIGN.md invariant 11): the registry snapshot
(:mod:`apps.registry.snapshot`: routes, clearances, each ministry's alias grants)
and the API-key facts (:mod:`apps.gateway.keys`). Each has a *name* here and a
row in :class:`~apps.tenancy.models.CacheVersion`.

What this module guarantees, and why (docs/adr/0005-cache-versions-in-postgresql.md):

* **A change and its announcement commit together.** :func:`bump_version` is an
  ``INSERT … ON CONFLICT DO UPDATE`` in the caller's transaction, so no change
  can commit without moving the version, and a crash between the two is
  impossible. Losing Redis (``FLUSHALL``, failover to a replica that missed the
  last writes) loses nothing: versions never lived there.
* **A version value is never reused.** Values come from a PostgreSQL sequence,
  which is not transactional: a value seen inside a transaction that later rolls
  back is never committed by anyone, so a cache built from rolled-back data can
  never look current.
* **Retries invalidate again.** Every call bumps, whether or not the change was
  already made (a retried revoke re-invalidates every process).
* **Readers are cheap and bounded.** A process reads the version (one primary-key
  ``SELECT``) at most every :func:`check_seconds` (0.5 s by default, never more
  than 1 s) and reloads when it differs; it also reloads after :func:`max_age_seconds` regardless, which
  bounds staleness even for a change that bypassed :func:`bump_version`.

Readers call :func:`read_version` from synchronous code only (it does I/O);
async code consults its in-process cache without I/O and hops to a thread to
refresh, exactly like any other database call.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

REGISTRY = "registry"
"""Routes, deployments (health, clearance), aliases and per-ministry grants."""

API_KEYS = "gateway.api_keys"
"""Everything an API key's facts derive from: the key, its ministry, its creator's membership."""

_TABLE = "tenancy_cacheversion"
_SEQUENCE = "tenancy_cacheversion_seq"

_BUMP_SQL = (
    f"INSERT INTO {_TABLE} (name, version, changed_at) VALUES (%s, nextval('{_SEQUENCE}'), now()) "
    "ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, changed_at = EXCLUDED.changed_at "
    "RETURNING version"
)
_READ_SQL = f"SELECT version FROM {_TABLE} WHERE name = %s"


def check_seconds() -> float:
    """How long a process may trust its cache without asking PostgreSQL (at most 1 s)."""
    return min(float(getattr(settings, "GENNAI_CACHE_CHECK_SECONDS", 0.5)), 1.0)


def max_age_seconds() -> float:
    """After this long a process reloads its cache even if no version moved."""
    return float(getattr(settings, "GENNAI_CACHE_MAX_AGE_SECONDS", 60.0))


def bump_version(name: str) -> int:
    """Move ``name`` to a new, never-used version in the current transaction; returns it.

    Security: call this inside the transaction that makes the change (services
    run in ``transaction.atomic``), not after commit: then the change is never
    visible without its new version. The row lock it takes is held until commit,
    which serialises concurrent changes of one cache (they are rare admin actions).
    """
    with connection.cursor() as cursor:
        cursor.execute(_BUMP_SQL, [name])
        row = cursor.fetchone()
    return int(row[0])


def read_version(name: str) -> int:
    """The committed version of ``name`` (0 before its first bump). Synchronous: one indexed read."""
    with connection.cursor() as cursor:
        cursor.execute(_READ_SQL, [name])
        row = cursor.fetchone()
    return int(row[0]) if row else 0
