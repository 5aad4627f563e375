"""Upload → parse → chunk → embed → index → ready, per-file refusals, dedupe, deletion and retention.

Runs the Celery tasks in process (eager) against the real PostgreSQL search
backend; the embedding call is replaced by a deterministic embedder (the
registry path is apps/search's and tested there).
"""

from __future__ import annotations

import io
import subprocess
from datetime import timedelta
from typing import Any

import pypdfium2 as pdfium
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.documents import pipeline
from apps.documents.models import Chunk, Document, DocumentStatus
from apps.documents.ocr import OcrPage, ocr_available
from apps.documents.services import (
    document_delete,
    document_retention_apply,
    document_upload,
    workspace_delete,
)
from apps.documents.storage import documents_storage
from apps.documents.tasks import EMBED_MAX_RETRIES, document_embed_task
from apps.search.base import get_backend
from apps.search.embeddings import EmbeddingUnavailable
from apps.search.models import IndexedChunk
from apps.tenancy.scope import ministry_scope

from . import samples
from .conftest import fake_vector

pytestmark = pytest.mark.skipif(not samples.NOTO_CJK.exists(), reason="fonts-noto-cjk not installed")


def _file(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def _upload(actor: Any, workspace: Any, files: list[Any], capture: Any) -> list[Any]:
    with capture(execute=True), ministry_scope(ministry_id=workspace.ministry_id):
        return document_upload(actor=actor.user, workspace=workspace, files=files)


def _search(workspace: Any, query: str, *, workspace_ids: list[int] | None = None) -> list[Any]:
    with ministry_scope(ministry_id=workspace.ministry_id):
        return get_backend().search(
            ministry_id=workspace.ministry_id,
            workspace_ids=workspace_ids if workspace_ids is not None else [workspace.pk],
            query=query,
            query_embedding=fake_vector(query),
            limit=5,
        )


def test_bad_files_fail_alone_and_leave_nothing(
    staff_a: Any,
    shared_workspace: Any,
    embedder: Any,
    eager: None,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
    media_root: Any,
) -> None:
    settings.GENNAI_DOCUMENT_MAX_BYTES = 200_000
    files = [
        _file("規程.docx", samples.docx_bytes()),
        _file("empty.txt", b""),
        _file("broken.pdf", b"%PDF-1.7\n" + b"garbage" * 100),
        _file("locked.pdf", samples.pdf_bytes(password="himitsu")),
        _file("bomb.docx", samples.zip_bomb_docx()),
        _file("photo.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),  # wrong extension
        _file("huge.txt", "あ".encode() * 70_000),  # 210 kB > 200 kB
    ]
    results = _upload(staff_a, shared_workspace, files, django_capture_on_commit_callbacks)

    assert [r.error_code for r in results] == [
        "",
        "empty",
        "corrupt",
        "encrypted",
        "zip_bomb",
        "unsupported",
        "too_large",
    ]
    assert all(r.error_ja and r.error_en for r in results[1:])
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        documents = list(Document.objects.all())
        assert [(d.filename, d.status) for d in documents] == [("規程.docx", DocumentStatus.READY)]
        assert Chunk.objects.filter(document=documents[0]).count() > 0
        assert IndexedChunk.objects.count() == Chunk.objects.count()
    # Only the accepted file was stored.
    stored = [p for p in media_root.rglob("*") if p.is_file()]
    assert len(stored) == 1


def test_end_to_end_ready_with_pages_offsets_and_progress(
    staff_a: Any,
    shared_workspace: Any,
    embedder: list[int],
    eager: None,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.GENNAI_DOCUMENT_EMBED_BATCH = 2
    results = _upload(
        staff_a,
        shared_workspace,
        [_file("a.pdf", samples.pdf_bytes()), _file("b.xlsx", samples.xlsx_bytes())],
        django_capture_on_commit_callbacks,
    )
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        pdf = Document.objects.get(pk=results[0].document.pk)
        assert pdf.status == DocumentStatus.READY and pdf.file_type == "pdf" and pdf.page_count == 3
        assert pdf.progress_done == pdf.progress_total == 3 and pdf.progress_percent == 100
        assert pdf.queued_at <= pdf.parsing_at <= pdf.embedding_at <= pdf.indexing_at <= pdf.ready_at
        chunks = list(Chunk.objects.filter(document=pdf).order_by("ordinal"))
        assert [(c.page_start, c.page_end) for c in chunks] == [(1, 1), (2, 2), (3, 3)]
        for chunk in chunks:
            assert pdf.text[chunk.char_start : chunk.char_end] == chunk.text
            assert chunk.boxes and list(chunk.boxes) == [str(chunk.page_start)]
    # Two chunks per batch: 3 chunks → batches of 2 and 1 (PDF), 2 chunks → 1 batch (XLSX).
    assert sorted(embedder) == [1, 2, 2]
    hits = _search(shared_workspace, "宿泊料の上限は一泊")
    assert hits and hits[0].document_id in {pdf.pk, results[1].document.pk}
    pdf_hits = [h for h in hits if h.document_id == pdf.pk]
    assert pdf_hits[0].page_start == 2  # 第2章 旅費 is on page 2


def test_same_bytes_are_stored_once(
    staff_a: Any, shared_workspace: Any, embedder: Any, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    first = _upload(
        staff_a, shared_workspace, [_file("a.csv", samples.csv_bytes())], django_capture_on_commit_callbacks
    )
    again = _upload(
        staff_a,
        shared_workspace,
        [_file("copy.csv", samples.csv_bytes())],
        django_capture_on_commit_callbacks,
    )
    assert again[0].duplicate and again[0].document.pk == first[0].document.pk


def test_steps_are_idempotent_and_never_duplicate_chunks(
    staff_a: Any, shared_workspace: Any, embedder: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.GENNAI_DOCUMENT_EMBED_BATCH = 1
    # Not eager: drive the steps by hand, as redelivered messages would.
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        with django_capture_on_commit_callbacks(execute=False):
            [result] = document_upload(
                actor=staff_a.user, workspace=shared_workspace, files=[_file("a.pdf", samples.pdf_bytes())]
            )
        document_id = result.document.pk
        assert pipeline.run_parse(document_id=document_id) == ""  # not begun: nothing to do
        assert pipeline.run_parse_begin(document_id=document_id) is True
        assert pipeline.run_parse(document_id=document_id) == "embed"
        assert pipeline.run_parse(document_id=document_id) == ""  # a second delivery: no-op
        assert pipeline.run_parse_begin(document_id=document_id) is False
        assert pipeline.run_embed_batch(document_id=document_id) is True
        # A parse that runs again (the message was redelivered after a crash before commit)
        # replaces the chunks and the index entries: still one set.
        Document.objects.filter(pk=document_id).update(status=DocumentStatus.PARSING)
        assert pipeline.run_parse(document_id=document_id) == "embed"
        assert IndexedChunk.objects.filter(document_id=document_id).count() == 0
        while pipeline.run_embed_batch(document_id=document_id):
            pass
        assert pipeline.run_embed_batch(document_id=document_id) is False
        ordinals = list(Chunk.objects.filter(document_id=document_id).values_list("ordinal", flat=True))
        assert ordinals == [0, 1, 2]
        assert sorted(
            IndexedChunk.objects.filter(document_id=document_id).values_list("ordinal", flat=True)
        ) == [0, 1, 2]
        assert Document.objects.get(pk=document_id).status == DocumentStatus.READY


def test_embedding_unavailable_retries_then_fails_with_reason(
    staff_a: Any,
    shared_workspace: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from apps.search import embeddings

    calls: list[int] = []

    def down(**_: Any) -> Any:
        calls.append(1)
        raise EmbeddingUnavailable("upstream down")

    monkeypatch.setattr(embeddings, "embed_passages", down)
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        with django_capture_on_commit_callbacks(execute=False):
            [result] = document_upload(
                actor=staff_a.user, workspace=shared_workspace, files=[_file("a.csv", samples.csv_bytes())]
            )
        assert pipeline.run_parse_begin(document_id=result.document.pk)
        assert pipeline.run_parse(document_id=result.document.pk) == "embed"
    # In process, Celery runs each retry at once (the countdown applies only through a broker).
    document_embed_task.apply(
        kwargs={"ministry_id": shared_workspace.ministry_id, "document_id": result.document.pk}
    )
    assert len(calls) == 1 + EMBED_MAX_RETRIES
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        document = Document.objects.get(pk=result.document.pk)
        assert document.status == DocumentStatus.FAILED
        assert "埋め込み" in document.failure_ja and "embedding" in document.failure_en
        assert not Chunk.objects.filter(document=document).exists()


def test_scanned_pdf_fails_with_reason(
    staff_a: Any, shared_workspace: Any, embedder: Any, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    [result] = _upload(
        staff_a,
        shared_workspace,
        [_file("scan.pdf", samples.scanned_pdf_bytes())],
        django_capture_on_commit_callbacks,
    )
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        document = Document.objects.get(pk=result.document.pk)
    assert document.status == DocumentStatus.FAILED and "OCR" in document.failure_ja and document.failed_at


def test_deleted_document_is_never_found_again(
    staff_a: Any, shared_workspace: Any, embedder: Any, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    [result] = _upload(
        staff_a, shared_workspace, [_file("a.docx", samples.docx_bytes())], django_capture_on_commit_callbacks
    )
    assert _search(shared_workspace, "報告書を提出")
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        from apps.documents.selectors import get_document_for_actor

        document = get_document_for_actor(actor=staff_a.user, document_id=result.document.pk)
        name = document.storage_name
        with django_capture_on_commit_callbacks(execute=False):
            document_delete(actor=staff_a.user, document=document)
        # Out of search at once, before the purge task ran.
        assert Document.objects.get(pk=document.pk).status == DocumentStatus.DELETING
    assert _search(shared_workspace, "報告書を提出") == []
    with (
        django_capture_on_commit_callbacks(execute=True),
        ministry_scope(ministry_id=shared_workspace.ministry_id),
    ):
        pipeline.run_purge(document_id=document.pk)
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        assert not Document.objects.filter(pk=document.pk).exists()
        assert not Chunk.objects.filter(document_id=document.pk).exists()
        assert not IndexedChunk.objects.filter(document_id=document.pk).exists()
    assert not documents_storage().exists(name)
    assert AuditEvent.objects.filter(action="documents.delete", target_id=str(document.pk)).exists()


def test_workspace_delete_removes_everything(
    staff_a: Any,
    shared_workspace: Any,
    embedder: Any,
    eager: None,
    django_capture_on_commit_callbacks: Any,
    media_root: Any,
) -> None:
    _upload(
        staff_a, shared_workspace, [_file("a.docx", samples.docx_bytes())], django_capture_on_commit_callbacks
    )
    from apps.documents.models import Workspace
    from apps.documents.selectors import get_workspace_for_actor

    with (
        django_capture_on_commit_callbacks(execute=True),
        ministry_scope(ministry_id=shared_workspace.ministry_id),
    ):
        workspace = get_workspace_for_actor(actor=staff_a.user, workspace_id=shared_workspace.pk)
        workspace_delete(actor=staff_a.user, workspace=workspace)
    assert _search(shared_workspace, "報告書を提出") == []
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        assert not Workspace.objects.filter(pk=shared_workspace.pk).exists()
        assert not Document.objects.exists() and not IndexedChunk.objects.exists()
    assert not [p for p in media_root.rglob("*") if p.is_file()]


def test_retention_deletes_only_expired_documents(
    staff_a: Any, shared_workspace: Any, embedder: Any, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    old, new = _upload(
        staff_a,
        shared_workspace,
        [_file("old.csv", samples.csv_bytes()), _file("new.md", "# 新\n本文。".encode())],
        django_capture_on_commit_callbacks,
    )
    with (
        django_capture_on_commit_callbacks(execute=True),
        ministry_scope(ministry_id=shared_workspace.ministry_id),
    ):
        Document.objects.filter(pk=old.document.pk).update(created_at=timezone.now() - timedelta(days=31))
        assert document_retention_apply(ministry_id=shared_workspace.ministry_id, days=30) == 1
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        assert list(Document.objects.values_list("pk", flat=True)) == [new.document.pk]


@pytest.mark.skipif(not ocr_available(), reason="tesseract-ocr-jpn not installed (make browser installs it)")
def test_scanned_pdf_is_read_by_ocr(
    staff_a: Any, shared_workspace: Any, embedder: Any, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    data = samples.scanned_japanese_pdf_bytes(["出張旅費の支給について", "宿泊料は実費を支給する。"])
    [result] = _upload(
        staff_a, shared_workspace, [_file("scan.pdf", data)], django_capture_on_commit_callbacks
    )
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        document = Document.objects.get(pk=result.document.pk)
        assert document.status == DocumentStatus.READY, document.failure_en
        assert document.parsing_at < document.ocr_at < document.embedding_at  # OCR committed as its own state
        assert document.skipped_pages == []
        assert "出張旅費の支給について" in document.text and "実費を支給する" in document.text
        [chunk] = Chunk.objects.filter(document=document)
    assert chunk.page_start == 1
    # The citation can be highlighted on the scanned page: one box per line of the
    # picture, in PDF points. The picture sits 10 mm from the top-left corner of an
    # A4 page (595 x 842 pt), 190 mm wide for 1600 px, so its first line (drawn
    # 60-110 px from the top, from x = 60 px) is about 777-794 pt from the bottom.
    lines = chunk.boxes["1"]
    assert len(lines) == 2, lines
    (left, bottom, right, top), second = lines
    assert (
        35 < left < 70 and 760 < bottom < top < 810 and right > left + 150
    )  # 11 characters of 48 px: ≈ 175 pt
    assert second[3] <= bottom + 1  # the second line lies below the first


def test_a_parse_killed_again_and_again_fails_instead_of_looping(
    staff_a: Any, shared_workspace: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        with django_capture_on_commit_callbacks(execute=False):
            [result] = document_upload(
                actor=staff_a.user, workspace=shared_workspace, files=[_file("a.csv", samples.csv_bytes())]
            )
        document_id = result.document.pk
        assert pipeline.run_parse_begin(document_id=document_id) is True
        # A duplicate message while the parse is under way is not an attempt.
        assert pipeline.run_parse_begin(document_id=document_id) is False
        assert Document.objects.get(pk=document_id).attempts == 1
        # The parse "dies" each time (never commits); after the stall time the sweep resumes it.
        stale = timezone.now() - pipeline.STALLED_AFTER - timedelta(seconds=1)
        for _ in range(pipeline.MAX_ATTEMPTS - 1):
            Document.objects.filter(pk=document_id).update(updated_at=stale)
            assert pipeline.run_parse_begin(document_id=document_id) is True
        Document.objects.filter(pk=document_id).update(updated_at=stale)
        assert pipeline.run_parse_begin(document_id=document_id) is False
        document = Document.objects.get(pk=document_id)
        assert document.status == DocumentStatus.FAILED and "繰り返し" in document.failure_ja


def test_retention_task_uses_the_ministrys_setting(
    staff_a: Any, shared_workspace: Any, embedder: Any, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    from apps.documents.models import DocumentRetention
    from apps.documents.tasks import retention_apply_task

    [result] = _upload(
        staff_a, shared_workspace, [_file("a.csv", samples.csv_bytes())], django_capture_on_commit_callbacks
    )
    ministry_id = shared_workspace.ministry_id
    with ministry_scope(ministry_id=ministry_id):
        Document.objects.filter(pk=result.document.pk).update(created_at=timezone.now() - timedelta(days=8))
    assert retention_apply_task.apply(kwargs={"ministry_id": ministry_id}).get() == 0  # no setting: kept
    with ministry_scope(ministry_id=ministry_id):
        DocumentRetention.objects.create(days=7)
    with django_capture_on_commit_callbacks(execute=True):
        assert retention_apply_task.apply(kwargs={"ministry_id": ministry_id}).get() == 1
    with ministry_scope(ministry_id=ministry_id):
        assert not Document.objects.exists()
    assert _search(shared_workspace, "宿泊料") == []
    assert AuditEvent.objects.filter(action="documents.retention_delete").exists()


def test_ocr_runs_in_page_batches_and_resumes_without_redoing_pages(
    staff_a: Any,
    shared_workspace: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    read: list[int] = []

    def fake_ocr(data: bytes, *, page_number: int) -> OcrPage:
        read.append(page_number)
        if page_number == 3:
            raise subprocess.CalledProcessError(1, "tesseract")  # one bad page: skipped, not fatal
        return OcrPage(text=f"第{page_number}頁の本文を文字認識で読み取った。")

    monkeypatch.setattr(pipeline, "ocr_available", lambda: True)
    monkeypatch.setattr(pipeline, "ocr_pdf_page", fake_ocr)
    monkeypatch.setattr(pipeline, "OCR_PAGES_PER_TASK", 2)
    data = samples.pdf_bytes(["本文のあるページです。"])  # page 1 has text
    scans = [samples.scanned_pdf_bytes() for _ in range(3)]
    merged = pdfium.PdfDocument(data)
    for scan in scans:
        merged.import_pages(pdfium.PdfDocument(scan))
    buffer = io.BytesIO()
    merged.save(buffer)
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        with django_capture_on_commit_callbacks(execute=False):
            [result] = document_upload(
                actor=staff_a.user, workspace=shared_workspace, files=[_file("mixed.pdf", buffer.getvalue())]
            )
        document_id = result.document.pk
        assert pipeline.run_parse_begin(document_id=document_id)
        assert pipeline.run_parse(document_id=document_id) == "ocr"  # state committed first
        document = Document.objects.get(pk=document_id)
        assert document.status == DocumentStatus.OCR and document.progress_total == 3
        assert pipeline.run_parse(document_id=document_id) == "ocr"  # pages 2 and 3
        assert Document.objects.get(pk=document_id).progress_done == 2
        assert pipeline.run_parse(document_id=document_id) == "embed"  # page 4, then chunking
        document = Document.objects.get(pk=document_id)
    assert read == [2, 3, 4]  # each page once, in batches of two
    assert document.status == DocumentStatus.EMBEDDING and document.skipped_pages == [3]
    assert "本文のあるページ" in document.text and "第2頁" in document.text and "第4頁" in document.text
    offsets = document.page_offsets
    assert (
        offsets[1] <= document.text.index("第2頁") < offsets[2] <= offsets[3] <= document.text.index("第4頁")
    )
    with ministry_scope(ministry_id=shared_workspace.ministry_id):
        spans = list(Chunk.objects.filter(document_id=document_id).values_list("page_start", "page_end"))
    assert spans == [(1, 4)]  # short pages: one chunk spanning them


def test_reupload_while_the_purge_deletes_the_file_keeps_the_new_original(
    staff_a: Any, shared_workspace: Any, embedder: Any, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    """The purge deletes its file after its commit; the same bytes uploaded in between must keep theirs."""
    [first] = _upload(
        staff_a, shared_workspace, [_file("a.csv", samples.csv_bytes())], django_capture_on_commit_callbacks
    )
    ministry_id = shared_workspace.ministry_id
    with ministry_scope(ministry_id=ministry_id):
        from apps.documents.selectors import get_document_for_actor

        document = get_document_for_actor(actor=staff_a.user, document_id=first.document.pk)
        with django_capture_on_commit_callbacks(execute=False):
            document_delete(actor=staff_a.user, document=document)
    with ministry_scope(ministry_id=ministry_id):
        with django_capture_on_commit_callbacks(execute=False) as purge_callbacks:
            pipeline.run_purge(document_id=document.pk)  # row gone; its file deletion waits for "commit"
    [again] = _upload(
        staff_a, shared_workspace, [_file("a.csv", samples.csv_bytes())], django_capture_on_commit_callbacks
    )
    assert again.document is not None and not again.duplicate
    for callback in purge_callbacks:
        callback()  # the purge's file deletion runs now
    storage = documents_storage()
    assert not storage.exists(document.storage_name)
    with ministry_scope(ministry_id=ministry_id):
        stored = Document.objects.get(pk=again.document.pk).storage_name
    assert stored != document.storage_name
    with storage.open(stored, "rb") as handle:
        assert handle.read() == samples.csv_bytes()
