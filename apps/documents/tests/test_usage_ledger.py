"""Ingestion writes one usage record per embedded batch, charged to the uploader (feature "ingest")."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile

from apps.documents import pipeline
from apps.documents.services import document_upload
from apps.documents.tests import samples
from apps.quotas.models import UsageRecord
from apps.tenancy.scope import ministry_scope
from tests.support.embedding import EmbeddingServer, register_standard_embedding


def test_each_embedded_batch_is_one_usage_record_of_the_uploader(
    staff_a: Any,
    shared_workspace: Any,
    embedding_server: EmbeddingServer,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.GENNAI_DOCUMENT_EMBED_BATCH = 2
    register_standard_embedding(embedding_server)
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        with django_capture_on_commit_callbacks(execute=False):
            [result] = document_upload(
                actor=staff_a.user,
                workspace=shared_workspace,
                files=[SimpleUploadedFile("a.pdf", samples.pdf_bytes())],
            )
        assert result.document is not None
        document_id = result.document.pk
        assert pipeline.run_parse_begin(document_id=document_id) is True
        assert pipeline.run_parse(document_id=document_id) == "embed"
        assert UsageRecord.objects.count() == 0  # parsing calls no model
        while pipeline.run_embed_batch(document_id=document_id):
            pass
        rows = list(UsageRecord.objects.order_by("id"))
    assert len(rows) == 2  # three chunks in batches of two
    for row in rows:
        assert (row.feature, row.user_id, row.endpoint, row.status) == (
            "ingest",
            staff_a.user.pk,
            "embeddings",
            "ok",
        )
        assert row.alias_name == "standard-embedding" and row.deployment_id is not None
        assert row.model_name and row.prompt_tokens > 0
