"""Two (or more) writers at once, made to meet inside a chosen function.

Used by the race tests of the console and quota services: each call runs in its
own thread with its own database connection, and every thread waits at
``target.name`` (a barrier, 3 s) until all have reached it — that is, after each
checked for an existing row and before it writes. Without serialisation all of
them then insert; with it (a lock taken before the check) the later ones wait
for the first's commit, the barrier times out and is skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections


def race_through(
    monkeypatch: pytest.MonkeyPatch, target: Any, name: str, calls: list[Callable[[], Any]]
) -> list[BaseException | None]:
    """Run ``calls`` at once, meeting in ``target.name``; each call's exception, or None."""
    barrier = threading.Barrier(len(calls))
    original = getattr(target, name)

    def meeting(*args: Any, **kwargs: Any) -> Any:
        try:
            barrier.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, meeting)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            calls[index]()
        except BaseException as exc:  # noqa: BLE001  (reported to the test)
            errors[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
