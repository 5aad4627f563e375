"""Ask a workspace, stream the cited answer, and the passage viewer.

Thin views: every id goes through ``get_*_for_actor`` (membership join: 404 for
other ministries and for colleagues outside the workspace). The stream reuses
chat's relay; only its final ``done`` fragment is this app's (answer with
citation links and the sources list).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET

from apps.audit.events import DOCUMENT_PASSAGE_VIEW, audit_document_access
from apps.chat.markdown import render_markdown
from apps.chat.streaming import SSE_HEADERS, relay, sse_event
from apps.registry.router import allowed_aliases
from apps.tenancy.connections import db_hop
from apps.tenancy.permissions import require_membership

from . import answers
from .models import Answer, Chunk
from .selectors import document_list, get_document_for_actor, get_workspace_for_actor
from .storage import documents_storage

PAGE_SCALE = 1.5
# Pixels of one rendered page image, at most (A0 at 1.5× is ≈18 M; A4 ≈1.1 M).
PAGE_MAX_PIXELS = 16_000_000
PAGE_CACHE_SECONDS = 60 * 60
CONTEXT_CHARS = 600


def citations_html(answer: Answer, content: str) -> SafeString:
    """The answer's Markdown rendered (sanitised by chat), each known ``[n]`` a link to its passage."""
    by_n = {s["n"]: s for s in answer.sources}
    rendered = render_markdown(content)

    def link(match: re.Match[str]) -> str:
        source = by_n.get(int(match.group(1)))
        if source is None or not source.get("chunk_id"):
            return match.group(0)
        url = reverse("documents:passage", args=[source["document_id"], source["chunk_id"]])
        return (
            f'<a class="gn-link" href="{escape(url)}" data-testid="citation" data-n="{source["n"]}">'
            f"[{source['n']}]</a>"
        )

    # Security: only text between tags is rewritten. ``[n]`` may also sit inside an
    # attribute value (a link title or URL the model wrote); inserting a tag there
    # would end the attribute early. The sanitiser writes every attribute value in
    # double quotes with ``"`` escaped, so the tag pattern below cannot be fooled.
    parts = _TAG.split(rendered)
    for i in range(0, len(parts), 2):
        parts[i] = answers.CITATION.sub(link, parts[i])
    return mark_safe("".join(parts))  # noqa: S308 - sanitised HTML plus our own links in text only


_TAG = re.compile(r'(<(?:[^>"]|"[^"]*")*>)')


def _answer_context(answer: Answer) -> dict[str, Any]:
    message = answer.message
    cited = answers.cited_numbers(message.content)
    return {
        "answer": answer,
        "m": message,
        "answer_html": citations_html(answer, message.content) if message.content else "",
        "sources": [
            {**s, "pages": answers.page_label(s["page_start"], s["page_end"]), "cited": s["n"] in cited}
            for s in answer.sources
        ],
        "uncited": bool(message.content) and not cited and message.status == "complete",
    }


@login_required
@require_membership
def ask(request: HttpRequest, workspace_id: int) -> HttpResponse:
    """GET: the question form. POST: start an answer and go to its page."""
    workspace = get_workspace_for_actor(actor=request.user, workspace_id=workspace_id)
    aliases = allowed_aliases(level=workspace.level)
    context: dict[str, Any] = {
        "workspace": workspace,
        "aliases": aliases,
        "documents": document_list(workspace=workspace).filter(status="ready"),
    }
    if request.method != "POST":
        return render(request, "documents/answer_ask.html", context)
    raw_ids = request.POST.getlist("documents")
    try:
        document_ids = [int(i) for i in raw_ids] if raw_ids else None
    except ValueError as exc:
        raise Http404 from exc
    alias = request.POST.get("alias") or (aliases[0].name if aliases else "")
    try:
        answer = answers.answer_start(
            actor=request.user,
            workspace=workspace,
            question=request.POST.get("question", ""),
            alias=alias,
            document_ids=document_ids,
        )
    except ValidationError as exc:
        context.update(errors=exc.messages, question=request.POST.get("question", ""))
        return render(request, "documents/answer_ask.html", context, status=422)
    return HttpResponseRedirect(reverse("documents:answer", args=[answer.pk]))


@login_required
@require_membership
@require_GET
def answer_detail(request: HttpRequest, answer_id: int) -> HttpResponse:
    answer = answers.get_answer_for_actor(actor=request.user, answer_id=answer_id)
    context = _answer_context(answer)
    context["connect"] = answer.message.is_streaming and not answer.message.is_claimed
    return render(request, "documents/answer_detail.html", context)


def _render_final(answer: Answer) -> str:
    return render_to_string("documents/answer_result.html", _answer_context(answer))


async def _answer_events(
    request: HttpRequest, answer_id: int, ministry_id: int, opened: Any, language: str | None
) -> AsyncIterator[bytes]:
    """Chat's relay (tokens, partial saves, usage), with this app's final fragment."""
    if not isinstance(opened, answers.AnswerReplay):
        inner = relay(opened, started=time.monotonic(), language=language)
        try:
            async for event in inner:
                if not event.startswith(b"event: done"):
                    yield event
        finally:  # the browser went away: let the relay save what it has
            await inner.aclose()  # type: ignore[attr-defined]
    answer = await db_hop(
        answers.answer_for_render, ministry_id=ministry_id, actor=request.user, answer_id=answer_id
    )
    with translation.override(language):
        yield sse_event("done", await db_hop(_render_final, answer))


@login_required
async def answer_stream(request: HttpRequest, answer_id: int) -> HttpResponseBase:
    """SSE stream of one answer; authorisation and the claim happen before the body starts."""
    membership = getattr(request, "membership", None)
    if membership is None:
        raise PermissionDenied("no ministry membership")
    opened = await db_hop(
        answers.answer_stream_open,
        ministry_id=membership.ministry_id,
        actor=request.user,
        answer_id=answer_id,
    )
    body = _answer_events(request, answer_id, membership.ministry_id, opened, translation.get_language())
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    for header, value in SSE_HEADERS.items():
        response[header] = value
    return response


# --- Passage viewer -------------------------------------------------------------------


def _chunk_for_actor(request: HttpRequest, document_id: int, chunk_id: int) -> tuple[Any, Chunk]:
    """The document (membership-checked) and one of its chunks, else 404."""
    document = get_document_for_actor(actor=request.user, document_id=document_id)
    chunk = Chunk.objects.filter(pk=chunk_id, document=document).first()
    if chunk is None:
        raise Http404
    return document, chunk


def _pages(chunk: Chunk) -> list[int]:
    if chunk.boxes:
        return sorted(int(p) for p in chunk.boxes)
    return list(range(chunk.page_start, chunk.page_end + 1)) if chunk.page_start else []


@login_required
@require_membership
@require_GET
def passage(request: HttpRequest, document_id: int, chunk_id: int) -> HttpResponse:
    """The cited passage: PDF pages as images with the passage highlighted, else the text with <mark>."""
    document, chunk = _chunk_for_actor(request, document_id, chunk_id)
    # One event per passage view; its page images (passage_page) are part of the same read.
    audit_document_access(
        actor=request.user, document=document, action=DOCUMENT_PASSAGE_VIEW, data={"chunk_id": chunk.pk}
    )
    context: dict[str, Any] = {"document": document, "chunk": chunk}
    if document.file_type == "pdf" and chunk.page_start:
        context["pages"] = _pages(chunk)
    else:
        text = type(document).objects.filter(pk=document.pk).values_list("text", flat=True).first() or ""
        start, end = chunk.char_start, chunk.char_end
        context.update(
            before=("…" if start > CONTEXT_CHARS else "") + text[max(0, start - CONTEXT_CHARS) : start],
            marked=text[start:end] or chunk.text,
            after=text[end : end + CONTEXT_CHARS] + ("…" if end + CONTEXT_CHARS < len(text) else ""),
        )
    return render(request, "documents/viewer_passage.html", context)


def render_page_png(*, data: bytes, page_number: int, boxes: list[list[float]]) -> bytes:
    """Page ``page_number`` (1-based) as PNG with the passage's boxes (PDF points) highlighted.

    Security: the page size is the uploader's to choose (a MediaBox of 14,400
    points or more; pdfium does not clamp it), and at 1.5× such a page is a
    466-million-pixel bitmap, several GB once composited, for one request by any
    member. The scale is lowered so the image holds at most
    :data:`PAGE_MAX_PIXELS` (:func:`apps.documents.ocr.bounded_scale`).
    """
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    from .ocr import bounded_scale

    pdf = pdfium.PdfDocument(data)
    try:
        if not 1 <= page_number <= len(pdf):
            raise Http404
        page = pdf[page_number - 1]
        width, height = page.get_width(), page.get_height()
        scale = bounded_scale(width, height, scale=PAGE_SCALE, max_pixels=PAGE_MAX_PIXELS)
        image = page.render(scale=scale).to_pil().convert("RGBA")
    finally:
        pdf.close()
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for left, bottom, right, top in boxes:
        rect = (
            left * scale - 2,
            (height - top) * scale - 2,
            right * scale + 2,
            (height - bottom) * scale + 2,
        )
        draw.rectangle(rect, fill=(255, 214, 0, 90), outline=(200, 120, 0, 255), width=2)
    out = io.BytesIO()
    Image.alpha_composite(image, overlay).convert("RGB").save(out, format="PNG", optimize=False)
    return out.getvalue()


@login_required
@require_membership
@require_GET
def passage_page(request: HttpRequest, document_id: int, chunk_id: int, page: int) -> HttpResponse:
    """The PNG of one page of the passage (access-checked; cached per chunk and page)."""
    document, chunk = _chunk_for_actor(request, document_id, chunk_id)
    if document.file_type != "pdf" or page not in _pages(chunk):
        raise Http404
    key = f"gennai:documents:page:{document.ministry_id}:{document.pk}:{document.sha256}:{chunk.pk}:{page}"
    png = cache.get(key)
    if png is None:
        with documents_storage().open(document.storage_name, "rb") as handle:
            data = handle.read()
        png = render_page_png(data=data, page_number=page, boxes=(chunk.boxes or {}).get(str(page), []))
        cache.set(key, png, timeout=PAGE_CACHE_SECONDS)
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response
