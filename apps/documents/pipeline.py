"""The ingestion steps, each idempotent, each run by a task inside the ministry scope.

Contract of a step (MUST): lock the document row first; do nothing unless the
document is in a state the step handles (so a duplicate or late delivery is a
no-op); leave the database either fully before or fully after the step (one
transaction: a worker killed mid-step loses nothing and duplicates nothing);
turn every problem of the *file* into ``failed`` with a reason in Japanese and
English; let problems of the *platform* (embedding unavailable, database down)
propagate so the task retries with backoff.

1. :func:`run_parse_begin` — queued → parsing, committed (and the attempt counted);
   :func:`run_parse` — parsing (→ ocr, committed, then again) → embedding: read the original, parse,
   normalise, chunk, replace the document's chunks (delete + insert in one
   transaction; the ``(document, ordinal)`` constraint makes a second set
   impossible) and remove any index entries of an earlier run.
2. :func:`run_embed_batch` — embedding → … → ready: embed the next batch of
   chunks not yet indexed, index them (an upsert by chunk id), mark them
   indexed; the last batch sets ``ready``. A killed batch is simply done again.
3. :func:`run_purge` — deleting → gone: index entries, the stored original, rows.
"""

from __future__ import annotations

import logging
import subprocess
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.quotas.context import usage_context
from apps.search import embeddings
from apps.search.base import ChunkRecord, get_backend

from .chunking import assemble, chunk_text, raw_indices_by_page
from .detect import FileType, Rejection
from .models import Chunk, Document, DocumentStatus, Workspace
from .ocr import ocr_available, ocr_pdf_page
from .parsers import Block, Parsed, parse, pdf_chunk_boxes
from .storage import documents_storage

logger = logging.getLogger("gennai.documents")

MAX_ATTEMPTS = 3
# A step that has not moved a document for this long is presumed dead (its worker was killed).
STALLED_AFTER = timedelta(minutes=10)
# Scanned pages OCR'd per task (seconds per page on CPU): large scans run as a series of tasks.
OCR_PAGES_PER_TASK = 10


def set_status(document: Document, status: str, **fields: Any) -> None:
    """Move ``document`` to ``status`` and stamp ``<status>_at``."""
    document.status = status
    setattr(document, f"{status}_at", timezone.now())
    for name, value in fields.items():
        setattr(document, name, value)
    document.save()


def fail(document: Document, *, ja: str, en: str) -> None:
    """``failed`` with a reason a person understands; chunks and index entries removed."""
    Chunk.objects.filter(document=document).delete()
    get_backend().delete_document(ministry_id=document.ministry_id, document_id=document.pk)
    set_status(document, DocumentStatus.FAILED, failure_ja=ja[:500], failure_en=en[:500])


def _locked(document_id: int) -> Document | None:
    return Document.objects.select_for_update().filter(pk=document_id).first()


def run_parse_begin(*, document_id: int) -> bool:
    """Commit ``parsing`` (and count the attempt) before the work starts; ``True`` to go on.

    Its own transaction, so the progress row shows the state while a long parse
    runs, and a document whose parse keeps getting killed (out of memory, say)
    fails after :data:`MAX_ATTEMPTS` instead of being resumed for ever.
    """
    document = _locked(document_id)
    if document is None or document.status not in (
        DocumentStatus.QUEUED,
        DocumentStatus.PARSING,
        DocumentStatus.OCR,
    ):
        return False
    if document.attempts >= MAX_ATTEMPTS:
        fail(
            document,
            ja="処理が繰り返し中断されたため中止しました。管理者に連絡してください。",
            en="Processing was interrupted repeatedly and has been stopped. Contact an administrator.",
        )
        return False
    if document.status != DocumentStatus.QUEUED and document.updated_at > timezone.now() - STALLED_AFTER:
        # A duplicate message (e.g. a sweep that fired while the document waited in a
        # backlog): the run it started is under way or queued. Not an attempt.
        return False
    document.attempts += 1
    if document.status == DocumentStatus.QUEUED:
        set_status(document, DocumentStatus.PARSING)
    else:
        document.save(update_fields=["attempts", "updated_at"])
    return True


def run_parse(*, document_id: int) -> str:
    """Parse and chunk. Returns the next step: ``"embed"``, ``"ocr"`` (parse again in
    the ``ocr`` state, committed first so it shows) or ``""`` (done or failed)."""
    document = _locked(document_id)
    if document is None or document.status not in (DocumentStatus.PARSING, DocumentStatus.OCR):
        return ""
    try:
        with documents_storage().open(document.storage_name, "rb") as handle:
            data = handle.read()
    except OSError:
        fail(document, ja="保存されたファイルが見つかりません。", en="The stored file is missing.")
        return ""
    try:
        parsed = parse(document.file_type, data)
        scanned = [page.number for page in parsed.pages if page.scanned]
        if document.status == DocumentStatus.PARSING and scanned and ocr_available():
            set_status(
                document, DocumentStatus.OCR, ocr_text={}, progress_done=0, progress_total=len(scanned)
            )
            return "ocr"
        if document.status == DocumentStatus.OCR and _ocr_next_pages(document, scanned, data):
            return "ocr"
        ocr_pages = _apply_ocr(document, parsed)
        assembled = assemble(parsed)
        pieces = chunk_text(assembled)
        boxes: list[Any] = [None] * len(pieces)
        if document.file_type == FileType.PDF and pieces:
            boxes = list(
                pdf_chunk_boxes(
                    data,
                    [raw_indices_by_page(assembled, p.char_start, p.char_end) for p in pieces],
                    ocr_boxes={n: document.ocr_boxes.get(str(n)) or [] for n in ocr_pages},
                )
            )
    except Rejection as refusal:
        fail(document, ja=refusal.ja, en=refusal.en)
        return ""
    except Exception:
        logger.exception("parsing document %s failed", document.pk)
        fail(
            document,
            ja="ファイルを解析できませんでした（形式が壊れている可能性があります）。",
            en="The file could not be parsed (it may be damaged).",
        )
        return ""
    if not pieces:
        if ocr_pages:
            fail(
                document,
                ja="スキャンされた PDF から文字認識（OCR）で文字を読み取れませんでした。",
                en="No text could be read from the scanned PDF by OCR.",
            )
        elif assembled.scanned_pages:
            fail(
                document,
                ja="文字情報のない（スキャンされた）PDF です。この環境では文字認識（OCR）を利用できません。",
                en="The PDF has no text layer (scanned) and OCR is not available here.",
            )
        else:
            fail(document, ja="文書に文字が含まれていません。", en="The document contains no text.")
        return ""
    # Replace, never add: an earlier (interrupted or repeated) run's rows and index entries go first.
    Chunk.objects.filter(document=document).delete()
    get_backend().delete_document(ministry_id=document.ministry_id, document_id=document.pk)
    Chunk.objects.bulk_create(
        Chunk(
            ministry_id=document.ministry_id,
            document=document,
            workspace_id=document.workspace_id,
            ordinal=piece.ordinal,
            text=piece.text,
            heading=piece.heading,
            page_start=piece.page_start,
            page_end=piece.page_end,
            char_start=piece.char_start,
            char_end=piece.char_end,
            token_count=piece.token_count,
            boxes=box or None,
        )
        for piece, box in zip(pieces, boxes, strict=True)
    )
    set_status(
        document,
        DocumentStatus.EMBEDDING,
        text=assembled.text,
        page_offsets=assembled.page_offsets,
        page_count=parsed.page_count,
        skipped_pages=[p for p in assembled.scanned_pages if parsed.page_count],
        progress_done=0,
        progress_total=len(pieces),
    )
    return "embed"


def _ocr_next_pages(document: Document, scanned: list[int], data: bytes) -> bool:
    """OCR the next :data:`OCR_PAGES_PER_TASK` scanned pages not done yet; ``True`` while more remain.

    Results are saved on the document in this step's transaction: a worker killed
    during OCR loses at most one batch of pages, never the pages before it.
    """
    pending = [number for number in scanned if str(number) not in document.ocr_text]
    for number in pending[:OCR_PAGES_PER_TASK]:
        try:
            page = ocr_pdf_page(data, page_number=number)
            document.ocr_text[str(number)] = page.text
            document.ocr_boxes[str(number)] = page.boxes
        except (subprocess.SubprocessError, OSError):
            # One unreadable page does not block the others: it is reported as skipped.
            logger.warning("OCR of page %s of document %s failed", number, document.pk, exc_info=True)
            document.ocr_text[str(number)] = None
    document.progress_done = len([n for n in scanned if str(n) in document.ocr_text])
    document.save(update_fields=["ocr_text", "ocr_boxes", "progress_done", "updated_at"])
    return len(pending) > OCR_PAGES_PER_TASK


def _apply_ocr(document: Document, parsed: Parsed) -> list[int]:
    """Put the saved OCR text into the scanned pages; returns the pages that got text.

    Pages without OCR text stay "scanned" (reported as skipped). An OCR'd page's
    text stands in for pdfium's raw text, so chunk offsets map to indices of
    ``document.ocr_boxes[page]`` exactly as they map to pdfium characters elsewhere.
    """
    done = []
    for page in parsed.pages:
        text = document.ocr_text.get(str(page.number)) if page.scanned else None
        if text:
            page.blocks = [Block(text)]
            page.raw = text
            page.scanned = False
            done.append(page.number)
    return done


def run_embed_batch(*, document_id: int) -> bool:
    """Embed and index the next batch; ``True`` while more batches remain.

    Raises :class:`apps.search.embeddings.EmbeddingUnavailable` for the task to retry.
    """
    document = _locked(document_id)
    if document is None or document.status not in (DocumentStatus.EMBEDDING, DocumentStatus.INDEXING):
        return False
    batch = list(
        Chunk.objects.filter(document=document, indexed_at__isnull=True).order_by("ordinal")[
            : settings.GENNAI_DOCUMENT_EMBED_BATCH
        ]
    )
    if batch:
        workspace = Workspace.objects.get(pk=document.workspace_id)
        # One usage record per batch, charged to the uploader (rolled back with the
        # batch if indexing fails, so a retried batch is not charged twice).
        with usage_context(feature="ingest", user_id=document.uploaded_by_id):
            vectors = embeddings.embed_passages(
                ministry_id=document.ministry_id, texts=[c.text for c in batch], level=workspace.level
            )
        records = [
            ChunkRecord(
                chunk_id=c.pk,
                ministry_id=c.ministry_id,
                workspace_id=c.workspace_id,
                document_id=c.document_id,
                ordinal=c.ordinal,
                text=c.text,
                page_start=c.page_start,
                page_end=c.page_end,
                char_start=c.char_start,
                char_end=c.char_end,
                heading=c.heading,
                embedding=tuple(v),
            )
            for c, v in zip(batch, vectors, strict=True)
        ]
        get_backend().index_chunks(ministry_id=document.ministry_id, chunks=records)
        Chunk.objects.filter(pk__in=[c.pk for c in batch]).update(indexed_at=timezone.now())
    done = Chunk.objects.filter(document=document, indexed_at__isnull=False).count()
    remaining = Chunk.objects.filter(document=document, indexed_at__isnull=True).exists()
    if remaining:
        document.progress_done = done
        document.save(update_fields=["progress_done", "updated_at"])
        return True
    # The last batch was indexed with its embeddings: the index holds every chunk.
    set_status(document, DocumentStatus.INDEXING, progress_done=done)
    set_status(document, DocumentStatus.READY)
    return False


def run_purge(*, document_id: int) -> None:
    """Remove a document marked ``deleting``: index entries, stored original, chunks and row."""
    document = _locked(document_id)
    if document is None or document.status != DocumentStatus.DELETING:
        return
    get_backend().delete_document(ministry_id=document.ministry_id, document_id=document.pk)
    name = document.storage_name
    document.delete()  # chunks cascade
    transaction.on_commit(lambda: _delete_file(name))


def run_workspace_purge(*, workspace_id: int) -> None:
    workspace = Workspace.objects.select_for_update().filter(pk=workspace_id, deleting=True).first()
    if workspace is None:
        return
    get_backend().delete_workspace(ministry_id=workspace.ministry_id, workspace_id=workspace.pk)
    names = list(Document.objects.filter(workspace=workspace).values_list("storage_name", flat=True))
    Chunk.objects.filter(workspace=workspace).delete()
    Document.objects.filter(workspace=workspace).delete()
    workspace.delete()

    def delete_files() -> None:
        for name in names:
            _delete_file(name)

    transaction.on_commit(delete_files)


def _delete_file(name: str) -> None:
    """The stored original goes after the rows are gone (a failed commit keeps both)."""
    documents_storage().delete(name)
