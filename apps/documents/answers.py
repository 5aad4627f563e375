"""Answers with citations: retrieve → prompt with numbered sources → stream through the router.

Request side (:func:`answer_start`) runs inside the request's ministry scope. It
checks the actor's membership of the workspace (and that every selected document
is in it), retrieves passages with the search backend (the workspace id is a
filter *inside* the query) or, when the selected documents fit the model's
context window, takes them whole, and saves the numbered sources on an
:class:`~apps.documents.models.Answer`. The question and the answer text are a
chat ``Conversation``/``Message`` pair at the workspace's 機密性 level, so the
router's allowlist and classification gate, the SSE relay, partial saves and
usage records are chat's own (:mod:`apps.chat.services`, :mod:`apps.chat.streaming`).

Stream side (:func:`answer_stream_open`) is called through ``db_hop`` after the
middleware's scope has ended: it takes ``ministry_id`` and enters the scope
itself, re-checks membership, claims the message exactly once and builds the
prompt from the saved sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.chat import services as chat_services
from apps.chat.models import Message, Role, Status
from apps.registry.router import RouteRefused, plan_route
from apps.search.base import SearchHit
from apps.search.relevance import evidence
from apps.search.selectors import hybrid_search
from apps.tenancy.scope import ministry_scope

from .models import Answer, AnswerMode, Chunk, Document, DocumentStatus, Workspace
from .selectors import get_workspace_for_actor

TOP_K = 6
MAX_QUESTION_CHARS = 2000
# Room kept for the system prompt, the question and the answer when deciding "whole documents".
PROMPT_OVERHEAD_TOKENS = 600
CITATION = re.compile(r"\[(\d{1,3})\]")


def not_in_sources_text() -> str:
    """The answer when no passage is evidence for the question (in the request's language)."""
    return _("資料に該当する記載が見つかりませんでした。")


SYSTEM_PROMPT_JA = (
    "あなたは行政職員を支援するアシスタントです。以下の「資料」だけを根拠に、日本語で簡潔に回答してください。"
    "根拠にした資料の番号を、該当する文の末尾に [1] のように角括弧で必ず示してください。"
    "資料に答えが書かれていない場合は、推測せず「資料には該当する記載がありません」と答えてください。"
)


@dataclass(frozen=True)
class Source:
    """One numbered source as sent to the model and shown under the answer."""

    n: int
    chunk_id: int
    document_id: int
    filename: str
    page_start: int
    page_end: int

    def as_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "filename": self.filename,
            "page_start": self.page_start,
            "page_end": self.page_end,
        }


def page_label(page_start: int, page_end: int) -> str:
    """ "p.3" / "p.3–4" / "" (formats without pages)."""
    if not page_start:
        return ""
    return f"p.{page_start}" if page_end in (0, page_start) else f"p.{page_start}–{page_end}"


def estimate_tokens(text: str) -> int:
    """A conservative token count for the fit test: one token per character ."""
    return len(text)


def cited_numbers(text: str) -> list[int]:
    """The source numbers ``[n]`` cited in an answer, in order, without repeats."""
    seen: list[int] = []
    for match in CITATION.finditer(text or ""):
        n = int(match.group(1))
        if n not in seen:
            seen.append(n)
    return seen


# --- Reads -------------------------------------------------------------------------


def get_answer_for_actor(*, actor: Any, answer_id: int) -> Answer:
    """Answer ``answer_id`` if the actor asked it and is still a member of its workspace, else 404.

    Security: an answer is its asker's chat conversation (the question may name
    people or cases; DESIGN §1: staff see only their own conversations), so
    another member of the same workspace gets the same 404 as for a missing id,
    and cannot claim (and so start, or be charged for) the stream of an answer
    the asker has not opened yet. The workspace is re-fetched through
    :func:`get_workspace_for_actor` (membership join), so another ministry's user
    (RLS), a colleague outside the workspace and a member removed since asking
    get the 404 too.
    """
    if not getattr(actor, "is_authenticated", False):
        raise Http404
    answer: Answer | None = (
        Answer.objects.filter(pk=answer_id, asked_by_id=actor.pk).select_related("message").first()
    )
    if answer is None:
        raise Http404
    answer.workspace = get_workspace_for_actor(actor=actor, workspace_id=answer.workspace_id)
    return answer


def _selected_documents(*, workspace: Workspace, document_ids: list[int] | None) -> list[Document]:
    """The ready documents of ``workspace`` among ``document_ids`` (all of them when None).

    Security: ids from the request are only used as a filter *within* the
    workspace the actor was checked against; an id of another workspace is
    refused like a missing one.
    """
    rows = Document.objects.filter(workspace=workspace, status=DocumentStatus.READY)
    if document_ids is None:
        return list(rows.defer("text").order_by("id"))
    wanted = sorted({int(i) for i in document_ids})
    found = list(rows.filter(pk__in=wanted).defer("text").order_by("id"))
    if len(found) != len(wanted):
        raise Http404
    return found


# --- Request side -------------------------------------------------------------------


def _retrieve(
    *, workspace: Workspace, question: str, documents: list[Document] | None, limit: int
) -> list[SearchHit]:
    """Hybrid search in the workspace (lexical only when no embedding can be had now), evidence only.

    The vector leg always finds nearest passages, even for a question the
    documents say nothing about; :func:`apps.search.relevance.evidence` keeps
    only passages that share most of the question's content words or whose
    embedding is close enough, so an unrelated question gets no sources (and
    the answer says so without a model call) instead of a confident invention.
    """
    hits = hybrid_search(
        ministry_id=workspace.ministry_id,
        workspace_ids=[workspace.pk],
        query=question,
        level=workspace.level,
        limit=limit,
        document_ids=[d.pk for d in documents] if documents is not None else None,
    )
    return evidence(question=question, hits=hits)


def _context_window(*, alias_name: str, level: int) -> int | None:
    """The smallest context window among the deployments the router may use (None: refused)."""
    try:
        plan = plan_route(alias_name=alias_name, level=level)
    except RouteRefused:
        return None
    return min(d.context_window for d in plan.candidates)


def _fits_whole(*, documents: list[Document], context_window: int | None) -> bool:
    if not documents or context_window is None:
        return False
    budget = context_window - chat_services.MAX_ANSWER_TOKENS - PROMPT_OVERHEAD_TOKENS
    lengths = Document.objects.filter(pk__in=[d.pk for d in documents]).values_list("text", flat=True)
    return sum(estimate_tokens(t) for t in lengths) <= budget


def _whole_sources(documents: list[Document]) -> list[Source]:
    """One source per document; its citation opens the document's first passage."""
    first_chunks = dict(
        Chunk.objects.filter(document__in=documents, ordinal=0).values_list("document_id", "pk")
    )
    return [
        Source(
            n=i,
            chunk_id=first_chunks.get(d.pk, 0),
            document_id=d.pk,
            filename=d.filename,
            page_start=1 if d.page_count else 0,
            page_end=d.page_count,
        )
        for i, d in enumerate(documents, start=1)
    ]


def answer_start(
    *,
    actor: Any,
    workspace: Workspace,
    question: str,
    alias: str,
    document_ids: list[int] | None = None,
    top_k: int = TOP_K,
) -> Answer:
    """Ask ``question`` in ``workspace`` (or over ``document_ids`` of it); the answer streams later.

    Security: membership is re-checked here (never trust a workspace object or ids
    from the request); the conversation carries the workspace's 機密性 level, so the
    router refuses deployments cleared below it at ask time and again at stream time.
    """
    workspace = get_workspace_for_actor(actor=actor, workspace_id=workspace.pk)
    text = chat_services.validate_content(question)
    if len(text) > MAX_QUESTION_CHARS:
        raise ValidationError(
            _("質問は%(limit)s文字以内で入力してください。") % {"limit": MAX_QUESTION_CHARS}, code="too_long"
        )
    documents = _selected_documents(workspace=workspace, document_ids=document_ids)
    selected = documents if document_ids is not None else None
    mode = AnswerMode.CHUNKS
    if selected and _fits_whole(
        documents=selected, context_window=_context_window(alias_name=alias, level=workspace.level)
    ):
        mode = AnswerMode.WHOLE
        sources = _whole_sources(selected)
    else:
        hits = _retrieve(workspace=workspace, question=text, documents=selected, limit=top_k)
        names = {d.pk: d.filename for d in documents}
        sources = [
            Source(
                n=i,
                chunk_id=h.chunk_id,
                document_id=h.document_id,
                filename=names.get(h.document_id, ""),
                page_start=h.page_start,
                page_end=h.page_end,
            )
            for i, h in enumerate((h for h in hits if h.document_id in names), start=1)
        ]
    with transaction.atomic():
        conversation = chat_services.conversation_create(
            actor=actor, alias_name=alias, level=workspace.level, title=chat_services.title_from(text)
        )
        Message.objects.create(
            conversation=conversation, role=Role.USER, content=text, status=Status.COMPLETE
        )
        message = chat_services._start_answer(conversation)  # route refusal → explained error
        if not sources and message.status == Status.STREAMING:
            # Nothing in the workspace is evidence for the question: that is the answer,
            # given without a model call (nothing to ground it, nothing to send).
            message.status, message.content = Status.COMPLETE, not_in_sources_text()
            message.save(update_fields=["status", "content", "updated_at"])
        answer: Answer = Answer.objects.create(
            workspace=workspace,
            asked_by=actor,
            conversation=conversation,
            message=message,
            question=text,
            mode=mode,
            document_ids=[d.pk for d in selected] if selected is not None else [],
            sources=[s.as_json() for s in sources],
        )
    return answer


# --- Stream side --------------------------------------------------------------------


def build_prompt(*, answer: Answer) -> list[dict[str, str]]:
    """System + user messages with the numbered sources ([1] 文書名 p.3 …) and the question.

    Security: a source whose document was deleted since the question was asked
    is left out, already while it is only marked ``deleting`` (its rows stay
    until the purge task runs): deletion takes a document out of search at once,
    and out of every prompt as well.
    """
    blocks: list[str] = []
    if answer.mode == AnswerMode.WHOLE:
        texts = dict(
            Document.objects.filter(
                workspace_id=answer.workspace_id, pk__in=[s["document_id"] for s in answer.sources]
            )
            .exclude(status=DocumentStatus.DELETING)
            .values_list("pk", "text")
        )
        for s in answer.sources:
            if s["document_id"] not in texts:  # deleted since the question was asked: never sent
                continue
            blocks.append(f"[{s['n']}] {s['filename']}\n{texts[s['document_id']]}")
    else:
        chunks = {
            c.pk: c
            for c in Chunk.objects.filter(
                workspace_id=answer.workspace_id, pk__in=[s["chunk_id"] for s in answer.sources]
            ).exclude(document__status=DocumentStatus.DELETING)
        }
        for s in answer.sources:
            chunk = chunks.get(s["chunk_id"])
            if chunk is None:  # deleted since the question was asked: never sent
                continue
            label = " ".join(p for p in (s["filename"], page_label(s["page_start"], s["page_end"])) if p)
            blocks.append(f"[{s['n']}] {label}\n{chunk.text}")
    user = "# 資料\n\n" + "\n\n".join(blocks) + f"\n\n# 質問\n{answer.question}"
    return [{"role": "system", "content": SYSTEM_PROMPT_JA}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class AnswerReplay:
    message: Message


def answer_stream_open(
    *, ministry_id: int, actor: Any, answer_id: int
) -> chat_services.StreamJob | AnswerReplay:
    """Authorise and claim the answer's message; the job carries the prompt with the sources.

    Same exactly-once claim as :func:`apps.chat.services.stream_open`; 404 unless
    the actor is a member of the answer's workspace.
    """
    with ministry_scope(ministry_id=ministry_id):
        answer = get_answer_for_actor(actor=actor, answer_id=answer_id)
        message = answer.message
        now = timezone.now()
        claimed = Message.objects.filter(
            pk=message.pk, status=Status.STREAMING, stream_started_at__isnull=True
        ).update(stream_started_at=now, updated_at=now)
        if not claimed:
            return AnswerReplay(message=message)
        conversation = answer.conversation
        try:
            plan = plan_route(
                alias_name=conversation.alias_name,
                level=answer.workspace.level,
                sticky_key=chat_services.sticky_key(conversation),
            )
        except RouteRefused as exc:
            Message.objects.filter(pk=message.pk).update(
                status=Status.ERROR, error=exc.message[:1000], updated_at=now
            )
            message.refresh_from_db()
            return AnswerReplay(message=message)
        # Budgets and limits: reserved by chat's relay before the model is called (feature "rag").
        return chat_services.charged_stream_job(
            ministry_id=ministry_id,
            actor=actor,
            conversation_id=conversation.pk,
            message_id=message.pk,
            plan=plan,
            messages=build_prompt(answer=answer),
            feature="rag",
        )


def answer_for_render(*, ministry_id: int, actor: Any, answer_id: int) -> Answer:
    """The answer with its message as saved now (for the final SSE fragment)."""
    with ministry_scope(ministry_id=ministry_id):
        answer = get_answer_for_actor(actor=actor, answer_id=answer_id)
        answer.message.refresh_from_db()
        return answer
