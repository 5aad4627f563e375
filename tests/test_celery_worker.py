"""A real Celery worker process runs tenant tasks against the test database.

Unlike ``apps/tenancy/tests/test_scope.py`` (which calls ``TenantTask`` in
process with ``.apply()``), this starts ``celery -A gennai worker`` as a child
process, sends tasks through the Redis broker with ``.delay()`` and waits for
their results. It proves, end to end, that:

* the worker re-enters the ministry scope from the ``ministry_id`` keyword and
  sees that ministry's rows only, while another ministry's committed rows exist;
* its database session is the unprivileged app role with ``gennai.ministry_id``
  set, so row-level security alone hides the other ministry (raw SQL, no ORM);
* a task message without an integer ``ministry_id`` fails in the worker with
  ``ScopeError`` (and ``.delay()`` without it is refused by the sender).

The rows must be visible to another process, hence ``transaction=True``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlunsplit

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from apps.console.models import Announcement
from apps.console.services import announcement_create, announcement_digest_cache_key
from apps.console.tasks import announcement_digest_refresh_task
from apps.tenancy.scope import ScopeError, ministry_scope
from apps.tenancy.tasks import TenantTask
from gennai.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]
WORKER_START_TIMEOUT = 60.0
RESULT_TIMEOUT = 30.0
WORKER_STOP_TIMEOUT = 15.0


@celery_app.task(base=TenantTask, name="tests.worker_db_view")
def worker_db_view(*, ministry_id: int) -> dict[str, Any]:
    """What the worker's database session is and sees, by raw SQL (no ORM filter).

    Runs in the worker (imported there with ``--include``), inside the scope
    ``TenantTask`` entered, so only PostgreSQL's RLS limits the rows.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, current_database(), current_setting('gennai.ministry_id', true),"
            " r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user"
        )
        user, database, guc, privileged = cursor.fetchone()
        table = connection.ops.quote_name(Announcement._meta.db_table)
        cursor.execute(f"SELECT ministry_id, title FROM {table} ORDER BY id")
        rows = [[ministry, title] for ministry, title in cursor.fetchall()]
    return {
        "pid": os.getpid(),
        "user": user,
        "database": database,
        "guc": guc,
        "privileged": privileged,
        "rows": rows,
    }


@dataclass
class Worker:
    """The running worker: its process, node name and log file."""

    process: subprocess.Popen[bytes]
    hostname: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def _test_database_url() -> str:
    """URL of the database the tests use (``test_gennai``), for the worker's DATABASE_URL."""
    db = connection.settings_dict
    host = str(db.get("HOST") or "127.0.0.1")
    netloc = quote(host, safe="") if host.startswith("/") else host
    if db.get("PORT"):
        netloc = f"{netloc}:{db['PORT']}"
    if db.get("USER"):
        auth = quote(str(db["USER"]), safe="")
        if db.get("PASSWORD"):
            auth += ":" + quote(str(db["PASSWORD"]), safe="")
        netloc = f"{auth}@{netloc}"
    return urlunsplit(("postgresql", netloc, "/" + quote(str(db["NAME"]), safe=""), "", ""))


def _stop(process: subprocess.Popen[bytes]) -> int | None:
    """Warm shutdown (SIGTERM: finish the current task, then exit); kill if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@pytest.fixture(scope="module")
def celery_worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One ``celery -A gennai worker --pool solo`` for the module, on the test database."""
    assert not celery_app.conf.task_always_eager, "tasks must go through the broker"
    hostname = f"gennai-test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gennai.settings.test",
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,  # the Django cache the digest is written to
        "CELERY_BROKER_URL": str(celery_app.conf.broker_url),
        "CELERY_RESULT_BACKEND": str(celery_app.conf.result_backend),
    }
    # Messages left by earlier tests of this session would run first: drop them.
    celery_app.control.purge()
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "gennai",
        "worker",
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--hostname",
        hostname,
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--include",
        __name__,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(process=process, hostname=hostname, log_path=log_path)
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while not celery_app.control.ping(destination=[hostname], timeout=0.5):
            if process.poll() is not None:
                pytest.fail(f"celery worker exited with {process.returncode}:\n{worker.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"celery worker did not answer ping in {WORKER_START_TIMEOUT}s:\n{worker.log()}")
        yield worker
    finally:
        returncode = _stop(process)
    assert returncode == 0, f"worker did not shut down cleanly ({returncode}):\n{worker.log()}"


@pytest.fixture
def announcements(ministries: tuple[Any, Any]) -> dict[int, list[str]]:
    """Committed announcements: two for ministry A, one for ministry B. Maps id → titles."""
    a, b = ministries
    titles = {a.pk: ["A 庁内連絡 1", "A 庁内連絡 2"], b.pk: ["B 限定のお知らせ"]}
    for ministry in (a, b):
        with ministry_scope(ministry_id=ministry.pk):
            for title in titles[ministry.pk]:
                announcement_create(actor=None, ministry=ministry, title=title, body="本文")
    for ministry_id in titles:
        cache.delete(announcement_digest_cache_key(ministry_id))
    return titles


def test_worker_digest_sees_only_its_ministry(
    celery_worker: Worker, ministries: tuple[Any, Any], announcements: dict[int, list[str]]
) -> None:
    a, b = ministries
    result_a = announcement_digest_refresh_task.delay(ministry_id=a.pk)
    result_b = announcement_digest_refresh_task.delay(ministry_id=b.pk)
    digest_a = result_a.get(timeout=RESULT_TIMEOUT)
    digest_b = result_b.get(timeout=RESULT_TIMEOUT)

    assert digest_a["ministry_id"] == a.pk
    assert digest_a["total"] == 2
    assert sorted(item["title"] for item in digest_a["latest"]) == sorted(announcements[a.pk])
    assert digest_b["ministry_id"] == b.pk
    assert digest_b["total"] == 1
    assert [item["title"] for item in digest_b["latest"]] == announcements[b.pk]
    # The worker wrote each digest under its own ministry's key in the shared cache.
    assert cache.get(announcement_digest_cache_key(a.pk)) == digest_a
    assert cache.get(announcement_digest_cache_key(b.pk)) == digest_b


def test_worker_database_session_is_bound_by_rls(
    celery_worker: Worker, ministries: tuple[Any, Any], announcements: dict[int, list[str]]
) -> None:
    a, _ = ministries
    view = worker_db_view.delay(ministry_id=a.pk).get(timeout=RESULT_TIMEOUT)

    assert view["pid"] == celery_worker.process.pid != os.getpid()
    assert view["database"] == connection.settings_dict["NAME"]
    assert view["user"] == settings.GENNAI_DB_APP_ROLE
    assert view["privileged"] is False
    assert view["guc"] == str(a.pk)
    # Raw SQL without a WHERE clause: RLS alone leaves only ministry A's rows.
    assert sorted(view["rows"]) == sorted([[a.pk, title] for title in announcements[a.pk]])


def test_task_without_integer_ministry_id_fails_with_scope_error(
    celery_worker: Worker, ministries: tuple[Any, Any]
) -> None:
    a, _ = ministries
    cache.delete(announcement_digest_cache_key(a.pk))
    # The sender refuses already: the keyword is part of the task's signature.
    with pytest.raises(TypeError, match="ministry_id"):
        announcement_digest_refresh_task.delay()
    # A message that skips that check (another producer, an older deploy) fails in the worker.
    missing = celery_app.send_task(announcement_digest_refresh_task.name, kwargs={})
    with pytest.raises(ScopeError):
        missing.get(timeout=RESULT_TIMEOUT)
    assert missing.state == "FAILURE"

    as_string = announcement_digest_refresh_task.delay(ministry_id=str(a.pk))
    with pytest.raises(ScopeError):
        as_string.get(timeout=RESULT_TIMEOUT)
    assert cache.get(announcement_digest_cache_key(a.pk)) is None
