"""The ministry scope with the connection pool on: nothing leaks between pooled uses.

Production runs with a psycopg pool (``OPTIONS["pool"]``), the test settings
without one. Here the pool is switched on for worker threads: two pooled
connections serve many interleaved checkouts of both ministries. Every checkout
must see exactly its own ministry, and a checkout without a scope must see the
setting empty and no rows: ``SET LOCAL`` (``set_config(…, true)``) ends with
the transaction, before the connection goes back to the pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections

from apps.console.models import Announcement
from apps.tenancy.scope import GUC_NAME, ministry_scope

POOL_SIZE = 2
THREADS, ROUNDS = 4, 12


@pytest.fixture
def pooled_default() -> Iterator[None]:
    """Connections opened by new threads come from a psycopg pool of ``POOL_SIZE``.

    The main thread keeps its own (unpooled) connection open meanwhile and must not
    close it: Django would hand it to the pool.
    """
    settings_dict = connections.settings["default"]
    saved = settings_dict["OPTIONS"]
    settings_dict["OPTIONS"] = {**saved, "pool": {"min_size": 1, "max_size": POOL_SIZE, "timeout": 10}}
    try:
        yield
    finally:
        settings_dict["OPTIONS"] = saved
        pool = type(connections["default"])._connection_pools.pop("default", None)
        if pool is not None:
            pool.close()


def _checkout(ministry_id: int | None) -> tuple[int, str | None, list[int], int]:
    """(backend pid, gennai.ministry_id as seen, ORM-visible ministries, raw row count)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = int(cursor.fetchone()[0])
    if ministry_id is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting(%s, true), (SELECT count(*) FROM console_announcement)", [GUC_NAME]
            )
            setting, count = cursor.fetchone()
        return pid, setting, [], int(count)
    with ministry_scope(ministry_id=ministry_id), connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting(%s, true), (SELECT count(*) FROM console_announcement)", [GUC_NAME]
        )
        setting, count = cursor.fetchone()
        seen = sorted(set(Announcement.objects.values_list("ministry_id", flat=True)))
    return pid, setting, seen, int(count)


@pytest.mark.django_db(transaction=True)
def test_scope_does_not_leak_across_pooled_connections(
    ministries: tuple[Any, Any], pooled_default: None
) -> None:
    a, b = ministries
    for ministry, n in ((a, 3), (b, 2)):
        with ministry_scope(ministry_id=ministry.pk):
            for i in range(n):
                Announcement.objects.create(title=f"{ministry.code}-{i}", body="本文")
    expected = {a.pk: 3, b.pk: 2}
    results: list[tuple[int | None, tuple[int, str | None, list[int], int]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        try:
            order = [a.pk, None, b.pk] if offset % 2 else [b.pk, None, a.pk]
            for i in range(ROUNDS):
                ministry_id = order[(i + offset) % len(order)]
                outcome = _checkout(ministry_id)
                connection.close()  # back to the pool, where another thread picks it up
                with lock:
                    results.append((ministry_id, outcome))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == THREADS * ROUNDS

    pids_by_ministry: dict[int | None, set[int]] = {}
    for ministry_id, (pid, setting, seen, count) in results:
        pids_by_ministry.setdefault(ministry_id, set()).add(pid)
        if ministry_id is None:
            assert (setting or "", count) == ("", 0), "an unscoped checkout saw a leftover ministry"
        else:
            assert setting == str(ministry_id)
            assert seen == [ministry_id]
            assert count == expected[ministry_id]
    all_pids = set().union(*pids_by_ministry.values())
    assert len(all_pids) <= POOL_SIZE, f"expected the pool's {POOL_SIZE} connections, saw {all_pids}"
    shared = pids_by_ministry[a.pk] & pids_by_ministry[b.pk] & pids_by_ministry[None]
    assert shared, "no pooled connection served both ministries and an unscoped checkout"
