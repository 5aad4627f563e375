"""Celery tasks of the ingestion pipeline: thin wrappers around :mod:`apps.documents.pipeline`.

Each runs in its ministry's scope (:class:`~apps.tenancy.tasks.TenantTask`, one
transaction per task) and queues the next step after commit. ``documents.embed``
is routed to the ``embed`` queue (``CELERY_TASK_ROUTES``): on CPU, embedding
dominates ingestion and gets its own workers. The two beat tasks fan out one
task per ministry, since a task runs in exactly one ministry's scope.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from apps.search.embeddings import EmbeddingUnavailable
from apps.tenancy.models import Ministry
from apps.tenancy.tasks import TenantTask

from . import pipeline
from .models import Document, DocumentRetention, DocumentStatus

EMBED_MAX_RETRIES = 8


def _after_commit(task: Any, **kwargs: Any) -> None:
    transaction.on_commit(lambda: task.delay(**kwargs))


@shared_task(base=TenantTask, name="documents.parse")
def document_parse_task(*, ministry_id: int, document_id: int) -> None:
    """Commit ``parsing`` first (visible at once, attempt counted), then parse in the next task."""
    if pipeline.run_parse_begin(document_id=document_id):
        _after_commit(document_parse_run_task, ministry_id=ministry_id, document_id=document_id)


@shared_task(base=TenantTask, name="documents.parse_run")
def document_parse_run_task(*, ministry_id: int, document_id: int) -> None:
    following = pipeline.run_parse(document_id=document_id)
    if following == "ocr":
        _after_commit(document_parse_run_task, ministry_id=ministry_id, document_id=document_id)
    elif following == "embed":
        _after_commit(document_embed_task, ministry_id=ministry_id, document_id=document_id)


@shared_task(base=TenantTask, name="documents.embed", bind=True, max_retries=EMBED_MAX_RETRIES)
def document_embed_task(self: Any, *, ministry_id: int, document_id: int) -> None:
    try:
        more = pipeline.run_embed_batch(document_id=document_id)
    except EmbeddingUnavailable as exc:
        if self.request.retries >= EMBED_MAX_RETRIES:
            document = Document.objects.filter(pk=document_id).first()
            if document is not None:
                pipeline.fail(
                    document,
                    ja=f"埋め込み（ベクトル化）サービスを利用できません: {exc}",
                    en=f"The embedding service is unavailable: {exc}",
                )
            return
        # Backoff 5 s, 10 s, 20 s … at most 5 minutes.
        raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries)) from exc
    if more:
        _after_commit(document_embed_task, ministry_id=ministry_id, document_id=document_id)


@shared_task(base=TenantTask, name="documents.purge")
def document_purge_task(*, ministry_id: int, document_id: int) -> None:
    pipeline.run_purge(document_id=document_id)


@shared_task(base=TenantTask, name="documents.workspace_purge")
def workspace_purge_task(*, ministry_id: int, workspace_id: int) -> None:
    pipeline.run_workspace_purge(workspace_id=workspace_id)


@shared_task(base=TenantTask, name="documents.retention_apply")
def retention_apply_task(*, ministry_id: int) -> int:
    from .services import document_retention_apply

    retention = DocumentRetention.objects.first()
    if retention is None:
        return 0
    return document_retention_apply(ministry_id=ministry_id, days=retention.days)


@shared_task(base=TenantTask, name="documents.resume_stalled")
def resume_stalled_task(*, ministry_id: int, older_than_seconds: float | None = None) -> list[int]:
    """Re-queue the step of every document whose pipeline has not moved for a while.

    A worker killed by the OS (OOM, node loss) may leave its message unacknowledged
    until the broker's visibility timeout; this resumes such documents sooner.
    Steps are idempotent, so a document that was only slow is not harmed.
    """
    age = pipeline.STALLED_AFTER if older_than_seconds is None else timedelta(seconds=older_than_seconds)
    cutoff = timezone.now() - age
    resumed = []
    for document in Document.objects.filter(
        status__in=[
            DocumentStatus.QUEUED,
            DocumentStatus.PARSING,
            DocumentStatus.OCR,
            DocumentStatus.EMBEDDING,
            DocumentStatus.INDEXING,
            DocumentStatus.DELETING,
        ],
        updated_at__lte=cutoff,
    ).only("pk", "status"):
        if document.status in (DocumentStatus.QUEUED, DocumentStatus.PARSING, DocumentStatus.OCR):
            task: Any = document_parse_task
        elif document.status == DocumentStatus.DELETING:
            task = document_purge_task
        else:
            task = document_embed_task
        _after_commit(task, ministry_id=ministry_id, document_id=document.pk)
        resumed.append(document.pk)
    return resumed


def _each_ministry(task: Any) -> int:
    ids = list(Ministry.objects.filter(active=True).values_list("pk", flat=True))
    for ministry_id in ids:
        task.delay(ministry_id=ministry_id)
    return len(ids)


@shared_task(name="documents.retention_sweep")
def retention_sweep() -> int:
    """Beat: apply each ministry's retention in its own scope."""
    return _each_ministry(retention_apply_task)


@shared_task(name="documents.stalled_sweep")
def stalled_sweep() -> int:
    """Beat: resume stalled documents, per ministry."""
    return _each_ministry(resume_stalled_task)
