"""Ingestion through real Celery worker processes (Redis broker, the ``embed`` queue).

* end to end: an upload commits, the parse task runs in the worker, the embed
  batches go through the ``embed`` queue, the document becomes ready and is found;
* a worker SIGKILLed in the middle of embedding leaves a consistent document;
  after a restart, the stalled-document sweep resumes it and it completes with
  exactly one set of chunks and one index entry per chunk.
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
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Count

from apps.documents.models import Chunk, Document, DocumentStatus
from apps.documents.selectors import get_workspace_for_actor
from apps.documents.services import document_upload, workspace_create
from apps.documents.tasks import resume_stalled_task
from apps.search.models import IndexedChunk
from apps.tenancy.scope import ministry_scope
from gennai.celery import app as celery_app
from tests.test_celery_worker import _stop, _test_database_url

from . import samples

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not samples.NOTO_CJK.exists(), reason="fonts-noto-cjk not installed"),
]

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT = 60.0


def _start_worker(
    media: Path, log_path: Path, *, delay: float, batch: int
) -> tuple[subprocess.Popen[bytes], str]:
    hostname = f"gennai-docs-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gennai.settings.test",
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": str(celery_app.conf.broker_url),
        "CELERY_RESULT_BACKEND": str(celery_app.conf.result_backend),
        "GENNAI_DOCUMENTS_ROOT": str(media),
        "GENNAI_DOCUMENT_EMBED_BATCH": str(batch),
        "GENNAI_TEST_EMBED_DELAY": str(delay),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "gennai", "worker", "--pool", "solo", "--concurrency", "1",
        "--hostname", hostname, "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-Q", "celery,embed", "--include", "apps.documents.tests.worker_stub",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not celery_app.control.ping(destination=[hostname], timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
    return process, hostname


@pytest.fixture
def media(tmp_path: Path, settings: Any) -> Path:
    settings.GENNAI_DOCUMENTS_ROOT = tmp_path / "documents"
    celery_app.control.purge()
    return tmp_path / "documents"


def _wait(ministry_id: int, document_id: int, until: Any, timeout: float = 30.0) -> Document:
    deadline = time.monotonic() + timeout
    while True:
        with ministry_scope(ministry_id=ministry_id):
            document = Document.objects.get(pk=document_id)
        if until(document) or time.monotonic() > deadline:
            return document
        time.sleep(0.1)


def _upload(staff: Any, files: list[Any]) -> tuple[Any, list[Any]]:
    with ministry_scope(ministry_id=staff.ministry.pk):
        workspace = workspace_create(actor=staff.user, name="W", kind="personal", level=1)
        workspace = get_workspace_for_actor(actor=staff.user, workspace_id=workspace.pk)
        results = document_upload(actor=staff.user, workspace=workspace, files=files)
    return workspace, results  # committed: the tasks are on their way


@pytest.fixture
def worker(media: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process, _ = _start_worker(media, tmp_path / "worker.log", delay=0, batch=2)
    yield process
    assert _stop(process) == 0


def test_worker_ingests_end_to_end(worker: Any, staff_a: Any) -> None:
    # Embedding has its own queue (the worker here consumes both, like `make run`'s).
    assert celery_app.amqp.router.route({}, "documents.embed")["queue"].name == "embed"
    _, [result] = _upload(staff_a, [SimpleUploadedFile("規程.pdf", samples.pdf_bytes())])
    document = _wait(staff_a.ministry.pk, result.document.pk, lambda d: not d.is_active)
    assert document.status == DocumentStatus.READY, document.failure_en
    assert document.progress_done == document.progress_total == 3 and document.page_count == 3
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert IndexedChunk.objects.filter(document_id=document.pk).count() == 3


def test_worker_killed_mid_embedding_resumes_exactly_once(media: Path, tmp_path: Path, staff_a: Any) -> None:
    log = tmp_path / "worker.log"
    text = "".join(
        f"第{i}条 職員は、規程第{i}号に定める手続に従い、所属長の承認を得なければならない。"
        for i in range(1, 60)
    )
    first, _ = _start_worker(media, log, delay=0.4, batch=1)
    try:
        _, [result] = _upload(staff_a, [SimpleUploadedFile("長い規程.txt", text.encode())])
        ministry_id, document_id = staff_a.ministry.pk, result.document.pk
        midway = _wait(ministry_id, document_id, lambda d: d.progress_done >= 2)
        assert midway.status == DocumentStatus.EMBEDDING and midway.progress_done < midway.progress_total
        os.killpg(first.pid, signal.SIGKILL)  # no warm shutdown: the batch in flight is lost
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    with ministry_scope(ministry_id=ministry_id):
        killed = Document.objects.get(pk=document_id)
        chunks_before = list(Chunk.objects.filter(document_id=document_id).values_list("pk", flat=True))
        assert killed.status == DocumentStatus.EMBEDDING and killed.progress_done < killed.progress_total

    second, _ = _start_worker(media, log, delay=0, batch=3)
    try:
        # The killed task's message waits for the broker's visibility timeout; the sweep resumes now.
        resume_stalled_task.delay(ministry_id=ministry_id, older_than_seconds=0).get(timeout=30)
        done = _wait(ministry_id, document_id, lambda d: not d.is_active)
    finally:
        assert _stop(second) == 0
    assert done.status == DocumentStatus.READY and done.progress_done == done.progress_total
    with ministry_scope(ministry_id=ministry_id):
        chunks = list(Chunk.objects.filter(document_id=document_id).order_by("ordinal"))
        assert [c.ordinal for c in chunks] == list(range(len(chunks)))
        assert sorted(c.pk for c in chunks) == sorted(chunks_before)  # the same set, not a second one
        indexed = IndexedChunk.objects.filter(document_id=document_id)
        assert indexed.count() == len(chunks)
        assert not indexed.values("chunk_id").annotate(n=Count("id")).filter(n__gt=1).exists()
