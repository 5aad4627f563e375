"""The LangChain retriever: only the actor's workspaces, re-checked on every call, in the ministry's scope."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from apps.documents.models import Chunk, Document, WorkspaceKind, WorkspaceMember
from apps.documents.services import workspace_create
from apps.search import embeddings
from apps.search.base import ChunkRecord, get_backend
from apps.search.retriever import WorkspaceRetriever
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import Actor, make_user


@pytest.fixture(autouse=True)
def _lexical(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(**_kwargs: Any) -> tuple[float, ...]:
        raise embeddings.EmbeddingUnavailable("no embedding alias in this test")

    monkeypatch.setattr(embeddings, "embed_query", unavailable)


def _indexed(owner: Any, ministry: Any, *, name: str, text: str, page: int = 3) -> tuple[Any, Chunk]:
    """A workspace of ``owner`` with one document and one indexed chunk."""
    with ministry_scope(ministry_id=ministry.pk):
        workspace = workspace_create(actor=owner, name=name, kind=WorkspaceKind.SHARED, level=1)
        document = Document.objects.create(
            workspace=workspace,
            filename=f"{name}.pdf",
            file_type="pdf",
            size=len(text),
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            storage_name="x",
            uploaded_by=owner,
            status="ready",
            text=text,
        )
        chunk = Chunk.objects.create(
            document=document,
            workspace=workspace,
            ordinal=0,
            text=text,
            page_start=page,
            page_end=page,
            char_start=0,
            char_end=len(text),
            token_count=len(text),
        )
        get_backend().index_chunks(
            ministry_id=ministry.pk,
            chunks=[
                ChunkRecord(
                    chunk_id=chunk.pk,
                    ministry_id=ministry.pk,
                    workspace_id=workspace.pk,
                    document_id=document.pk,
                    ordinal=0,
                    text=text,
                    page_start=page,
                    page_end=page,
                    char_start=0,
                    char_end=len(text),
                )
            ],
        )
    return workspace, chunk


def test_retriever_returns_only_the_actors_workspaces(staff_a: Actor, staff_b: Actor) -> None:
    colleague = make_user("colleague-r", staff_a.ministry, ["staff"])
    mine, my_chunk = _indexed(
        staff_a.user, staff_a.ministry, name="出張規程", text="宿泊料の上限は一泊一万二千円とする。"
    )
    theirs, _ = _indexed(
        colleague, staff_a.ministry, name="人事秘", text="宿泊料の上限は人事課の内規で定める。"
    )
    other, _ = _indexed(
        staff_b.user, staff_b.ministry, name="B省規程", text="宿泊料の上限は一泊九千円とする。"
    )

    retriever = WorkspaceRetriever(
        actor_id=staff_a.user.pk,
        ministry_id=staff_a.ministry.pk,
        workspace_ids=[mine.pk, theirs.pk, other.pk],
        k=5,
    )
    found = retriever.invoke("宿泊料の上限")
    assert [d.metadata["chunk_id"] for d in found] == [my_chunk.pk]
    meta = found[0].metadata
    assert (
        meta["document_id"] == my_chunk.document_id
        and meta["page"] == 3
        and meta["filename"] == "出張規程.pdf"
    )
    assert "一万二千円" in found[0].page_content

    # Ministry B's id with A's actor (crafted): B's scope has no membership of A's user.
    crafted = WorkspaceRetriever(
        actor_id=staff_a.user.pk, ministry_id=staff_b.ministry.pk, workspace_ids=[other.pk, mine.pk]
    )
    assert crafted.invoke("宿泊料の上限") == []
    # B's user asking for A's workspace in A's ministry: nothing.
    assert (
        WorkspaceRetriever(
            actor_id=staff_b.user.pk, ministry_id=staff_a.ministry.pk, workspace_ids=[mine.pk]
        ).invoke("宿泊料の上限")
        == []
    )
    # The colleague outside "mine" gets only their own workspace.
    theirs_only = WorkspaceRetriever(
        actor_id=colleague.pk, ministry_id=staff_a.ministry.pk, workspace_ids=[mine.pk, theirs.pk]
    ).invoke("宿泊料の上限")
    assert {d.metadata["workspace_id"] for d in theirs_only} == {theirs.pk}


def test_membership_is_rechecked_on_every_call(staff_a: Actor) -> None:
    viewer = make_user("viewer-r", staff_a.ministry, ["staff"])
    workspace, chunk = _indexed(
        staff_a.user, staff_a.ministry, name="共有", text="報告書は五日以内に提出する。"
    )
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        member = WorkspaceMember.objects.create(workspace=workspace, user=viewer, role="viewer")
    retriever = WorkspaceRetriever(
        actor_id=viewer.pk, ministry_id=staff_a.ministry.pk, workspace_ids=[workspace.pk]
    )
    assert [d.metadata["chunk_id"] for d in retriever.invoke("報告書 提出")] == [chunk.pk]
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        member.delete()
    assert retriever.invoke("報告書 提出") == []
