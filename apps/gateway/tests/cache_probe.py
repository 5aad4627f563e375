"""A second Django process for cache tests: it answers from its *own* in-process caches.

Run as ``python -m apps.gateway.tests.cache_probe`` with ``GENNAI_PROBE_DB_NAME``
set to the test database; it reads one JSON command per line on stdin and
answers one JSON line on stdout. ``… cache_probe serve <port>`` instead serves
the production ASGI application (``gennai.asgi``: the lean ``/v1`` front, then
Django) with uvicorn, for tests that go through real requests. The tests start it, let it fill its registry
snapshot and key cache, change something in the test process, flush Redis, and
ask it to ``watch`` until it sees the change. What it measures is the time from
the ``watch`` command (sent right after the change committed) to the first
answer that reflects the change.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gennai.settings.test")
    import django
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = os.environ["GENNAI_PROBE_DB_NAME"]
    django.setup()


def _key_state(plaintext: str) -> str:
    from apps.gateway import keys

    # The hot path's own sequence: the I/O-free cache first, then the sync lookup.
    info = keys.cached_key(plaintext)
    if info is None:
        info = keys.lookup_key(plaintext)
    return keys.check_key(info, plaintext)


def _route(ministry_id: int, alias: str, level: int) -> str:
    from django.db import connection

    from apps.registry.router import RouteRefused, plan_route
    from apps.tenancy.scope import ministry_scope

    try:
        with ministry_scope(ministry_id=ministry_id):
            plan = plan_route(alias_name=alias, level=level)
        return "ok:" + ",".join(str(d.id) for d in plan.candidates)
    except RouteRefused as exc:
        return f"refused:{exc.code}"
    finally:
        connection.close()  # like a request: nothing is held between answers


def _answer(command: dict[str, Any]) -> Any:
    op = command["op"]
    if op == "reset":
        from apps.gateway import keys
        from apps.registry import snapshot

        keys.reset_for_tests()
        snapshot.reset_for_tests()
        return "ok"
    if op == "key":
        return _key_state(command["plaintext"])
    if op == "route":
        return _route(command["ministry_id"], command["alias"], command["level"])
    if op == "watch":
        # Poll the question until the answer differs from ``until_not``; report how long it took.
        question = command["question"]
        started = time.monotonic()
        deadline = started + float(command.get("timeout", 5.0))
        while True:
            answer = _answer(question)
            if answer != command["until_not"] or time.monotonic() > deadline:
                return {"answer": answer, "seconds": time.monotonic() - started}
            time.sleep(0.01)
    raise ValueError(f"unknown op {op!r}")


def serve(port: int) -> None:
    _setup()
    import uvicorn

    from gennai.asgi import application

    uvicorn.run(
        application,
        host="127.0.0.1",
        port=port,
        http="httptools",
        ws="none",
        lifespan="off",
        log_level="warning",
    )


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]))
        return
    _setup()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result: dict[str, Any] = {"result": _answer(json.loads(line))}
        except Exception as exc:  # noqa: BLE001 - report to the test instead of dying silently
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
