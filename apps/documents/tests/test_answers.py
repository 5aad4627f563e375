"""Answers with citations: ask → numbered sources → streamed answer → citation → passage viewer.

Real pipeline (eager Celery, PostgreSQL search backend, deterministic embedder)
and the real router/relay against :class:`FakeUpstream`; the fake's answer text is
``<word>0 <word>1 …`` so a ``word`` of ``"[1]"`` makes it cite source 1.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from apps.chat.models import Message, Status
from apps.chat.tests.factories import run_stream
from apps.documents import answers
from apps.documents.models import Answer, AnswerMode, Chunk, Document, DocumentStatus
from apps.documents.services import document_upload
from apps.registry import snapshot
from apps.registry.breaker import breaker
from apps.registry.providers import openai_compatible
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

from . import samples
from .conftest import fake_vector

pytestmark = pytest.mark.skipif(not samples.NOTO_CJK.exists(), reason="fonts-noto-cjk not installed")

PAGES = [
    "第1章 総則\nこの規程は、職員の出張に関し必要な事項を定める。出張の命令は所属長が行う。",
    "第2章 旅費\n旅費は実費を支給する。宿泊料の上限は一泊一万二千円とする。領収書を添付すること。",
    "第3章 報告\n出張者は帰庁後五日以内に報告書を提出しなければならない。",
]
MEMO = "テレワーク実施要領\n\n在宅勤務の申請は前日の正午までに行う。\n\n勤務場所は自宅に限る。"


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    snapshot.reset_for_tests()
    breaker.reset()
    openai_compatible._clients.clear()
    yield
    snapshot.reset_for_tests()
    breaker.reset()
    openai_compatible._clients.clear()


@pytest.fixture
def query_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.search import embeddings

    monkeypatch.setattr(embeddings, "embed_query", lambda *, ministry_id, text, level=1: fake_vector(text))


@pytest.fixture
def docs(
    staff_a: Actor,
    shared_workspace: Any,
    embedder: Any,
    query_embedder: None,
    eager: None,
    django_capture_on_commit_callbacks: Any,
) -> dict[str, Document]:
    files = [
        SimpleUploadedFile("出張規程.pdf", samples.pdf_bytes(PAGES)),
        SimpleUploadedFile("テレワーク.txt", MEMO.encode()),
    ]
    with django_capture_on_commit_callbacks(execute=True), ministry_scope(ministry_id=staff_a.ministry.pk):
        document_upload(actor=staff_a.user, workspace=shared_workspace, files=files)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        found = {d.file_type: d for d in Document.objects.filter(workspace=shared_workspace)}
    assert {d.status for d in found.values()} == {DocumentStatus.READY}
    return found


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _ask(actor: Actor, workspace: Any, question: str, alias: str, **extra: Any) -> Any:
    data: dict[str, Any] = {"question": question, "alias": alias, **extra}
    return _client(actor.user).post(f"/documents/workspaces/{workspace.pk}/ask", data)


def _answer(actor: Actor, response: Any) -> Answer:
    assert response.status_code == 302, response.content.decode()[:2000]
    answer_id = int(re.search(r"/answers/(\d+)/", response["Location"]).group(1))  # type: ignore[union-attr]
    with ministry_scope(ministry_id=actor.ministry.pk):
        answer: Answer = Answer.objects.select_related("message").get(pk=answer_id)
        return answer


def test_answer_cites_numbered_sources_and_the_citation_opens_the_highlighted_page(
    staff_a: Actor, shared_workspace: Any, docs: dict[str, Document]
) -> None:
    with FakeUpstream(tokens=2, word="[1]") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        answer = _answer(
            staff_a, _ask(staff_a, shared_workspace, "宿泊料の上限はいくらですか", reg.alias.name)
        )
        page = _client(staff_a.user).get(f"/documents/answers/{answer.pk}/")
        assert f'sse-connect="/documents/answers/{answer.pk}/stream"' in page.content.decode()
        result = run_stream(staff_a.user, f"/documents/answers/{answer.pk}/stream")
        prompt = fake.last_body["messages"]

    assert answer.mode == AnswerMode.CHUNKS
    first = answer.sources[0]
    assert first["n"] == 1 and first["document_id"] == docs["pdf"].pk and first["page_start"] == 2
    # Numbered sources with document name and page, and the instruction to cite / admit ignorance.
    assert "[1] 出張規程.pdf p.2\n" in prompt[1]["content"] and "一泊一万二千円" in prompt[1]["content"]
    assert "[1]" in prompt[0]["content"] and "資料には該当する記載がありません" in prompt[0]["content"]
    assert prompt[1]["content"].endswith("宿泊料の上限はいくらですか")

    assert result.tokens == ["[1]0 ", "[1]1 "]
    done = result.done
    assert done is not None and 'data-status="complete"' in done.data
    passage_url = f"/documents/documents/{docs['pdf'].pk}/passage/{first['chunk_id']}/"
    assert f'href="{passage_url}" data-testid="citation" data-n="1"' in done.data
    assert 'data-testid="uncited"' not in done.data

    with ministry_scope(ministry_id=staff_a.ministry.pk):
        message = Message.objects.get(pk=answer.message_id)
    assert message.status == Status.COMPLETE and message.content == "[1]0 [1]1 "
    assert message.prompt_tokens and message.completion_tokens == 2  # usage recorded like chat

    viewer = _client(staff_a.user).get(passage_url)
    assert viewer.status_code == 200
    png_url = f"/documents/documents/{docs['pdf'].pk}/passage/{first['chunk_id']}/page/2.png"
    assert png_url in viewer.content.decode()
    image = _client(staff_a.user).get(png_url)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    picture = Image.open(io.BytesIO(image.content)).convert("RGB")
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        boxes = Chunk.objects.get(pk=first["chunk_id"]).boxes["2"]
    left, bottom, right, top = boxes[0]
    height_pt = picture.height / 1.5
    # The middle of the passage's first line is tinted (highlight), not left white.
    x, y = int((left + right) / 2 * 1.5), int((height_pt - (top + bottom) / 2) * 1.5)
    tinted: list[Any] = [picture.getpixel((xx, y)) for xx in range(x - 40, x + 40)]
    assert any(r > 200 and b < 200 for r, _g, b in tinted)
    blank = picture.getpixel((5, 5))
    assert blank == (255, 255, 255)


def test_sources_shown_when_model_does_not_cite_and_text_viewer_marks_passage(
    staff_a: Actor, shared_workspace: Any, docs: dict[str, Document]
) -> None:
    with FakeUpstream(tokens=2, word="tok") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        answer = _answer(staff_a, _ask(staff_a, shared_workspace, "在宅勤務の申請期限は", reg.alias.name))
        result = run_stream(staff_a.user, f"/documents/answers/{answer.pk}/stream")
    done = result.done
    assert done is not None and 'data-testid="uncited"' in done.data
    txt = next(s for s in answer.sources if s["document_id"] == docs["text"].pk)
    assert f'data-testid="source" data-n="{txt["n"]}" data-document-id="{docs["text"].pk}"' in done.data
    page = _client(staff_a.user).get(f"/documents/answers/{answer.pk}/")
    assert 'data-testid="uncited"' in page.content.decode() and "テレワーク.txt" in page.content.decode()

    viewer = _client(staff_a.user).get(f"/documents/documents/{docs['text'].pk}/passage/{txt['chunk_id']}/")
    body = viewer.content.decode()
    assert viewer.status_code == 200
    marked = re.search(r'<mark id="passage" data-testid="passage">(.*?)</mark>', body, re.S)
    assert marked is not None and "前日の正午" in marked.group(1)


def test_selected_documents_that_fit_are_sent_whole(
    staff_a: Actor, shared_workspace: Any, docs: dict[str, Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeUpstream(tokens=1, word="[1]") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        whole = _answer(
            staff_a,
            _ask(staff_a, shared_workspace, "勤務場所は", reg.alias.name, documents=[docs["text"].pk]),
        )
        result = run_stream(staff_a.user, f"/documents/answers/{whole.pk}/stream")
        prompt = fake.last_body["messages"][1]["content"]
        assert whole.mode == AnswerMode.WHOLE
        assert [s["document_id"] for s in whole.sources] == [docs["text"].pk]
        with ministry_scope(ministry_id=staff_a.ministry.pk):
            full_text = Document.objects.get(pk=docs["text"].pk).text
        assert f"[1] テレワーク.txt\n{full_text}" in prompt
        assert result.done is not None and 'data-mode="whole"' in result.done.data

        # The same selection when it does not fit the window: retrieved chunks, of that document only.
        monkeypatch.setattr(answers, "PROMPT_OVERHEAD_TOKENS", 10_000)
        chunks = _answer(
            staff_a,
            _ask(staff_a, shared_workspace, "勤務場所は", reg.alias.name, documents=[docs["text"].pk]),
        )
    assert chunks.mode == AnswerMode.CHUNKS
    assert chunks.sources and {s["document_id"] for s in chunks.sources} == {docs["text"].pk}


def test_classification_gate_uses_workspace_level(
    staff_a: Actor, shared_workspace: Any, docs: dict[str, Document]
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        type(shared_workspace).objects.filter(pk=shared_workspace.pk).update(level=3)
    with FakeUpstream(tokens=1) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url, clearance=2)], ministries=[staff_a.ministry])
        response = _ask(staff_a, shared_workspace, "宿泊料の上限", reg.alias.name)
    # Not offered at level 3: refused before anything is sent.
    assert response.status_code == 422 and fake.requests == 0


def test_outsiders_get_404_everywhere(
    staff_a: Actor, staff_b: Actor, colleague_a: Any, shared_workspace: Any, docs: dict[str, Document]
) -> None:
    with FakeUpstream(tokens=1, word="[1]") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry, staff_b.ministry])
        answer = _answer(staff_a, _ask(staff_a, shared_workspace, "宿泊料の上限", reg.alias.name))
        source = answer.sources[0]
        urls = [
            f"/documents/workspaces/{shared_workspace.pk}/ask",
            f"/documents/answers/{answer.pk}/",
            f"/documents/documents/{source['document_id']}/passage/{source['chunk_id']}/",
            f"/documents/documents/{source['document_id']}/passage/{source['chunk_id']}/page/2.png",
        ]
        for user in (staff_b.user, colleague_a):
            client = _client(user)
            for url in urls:
                assert client.get(url).status_code == 404, (user, url)
            post = client.post(urls[0], {"question": "宿泊料", "alias": reg.alias.name})
            assert post.status_code == 404
            stream = run_stream(user, f"/documents/answers/{answer.pk}/stream")
            assert stream.status_code == 404
        # A member cannot pull another workspace's document in by id.
        with ministry_scope(ministry_id=staff_a.ministry.pk):
            from apps.documents.services import workspace_create

            other = workspace_create(actor=colleague_a, name="別", kind="personal", level=1)
        crafted = _ask(
            staff_a, shared_workspace, "宿泊料", reg.alias.name, documents=[docs["pdf"].pk, other.pk + 10_000]
        )
        assert crafted.status_code == 404
        assert fake.requests == 0  # nothing reached the model for an outsider
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        message = Message.objects.get(pk=answer.message_id)
    assert (
        message.status == Status.STREAMING and message.stream_started_at is None
    )  # not claimed by outsiders


def test_a_second_stream_replays_and_no_sources_is_an_explained_error(
    staff_a: Actor, shared_workspace: Any, docs: dict[str, Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeUpstream(tokens=1, word="[1]") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        answer = _answer(staff_a, _ask(staff_a, shared_workspace, "宿泊料の上限", reg.alias.name))
        url = f"/documents/answers/{answer.pk}/stream"
        first, second = run_stream(staff_a.user, url), run_stream(staff_a.user, url)
        assert fake.requests == 1  # the reconnect did not start a second upstream request
        assert second.tokens == [] and second.done is not None and first.done is not None
        assert 'data-testid="citation" data-n="1"' in second.done.data

        # Lexical only (embedding unavailable): a query sharing nothing with the documents finds nothing.
        from apps.search import embeddings

        def unavailable(**_kwargs: Any) -> tuple[float, ...]:
            raise embeddings.EmbeddingUnavailable("down")

        monkeypatch.setattr(embeddings, "embed_query", unavailable)
        nothing = _answer(staff_a, _ask(staff_a, shared_workspace, "ZZZZ QQQQ", reg.alias.name))
        assert nothing.sources == []
        page = _client(staff_a.user).get(f"/documents/answers/{nothing.pk}/").content.decode()
        assert "資料に該当する記載が見つかりませんでした。" in page and "sse-connect" not in page
        assert fake.requests == 1


def test_citation_links_only_replace_text_never_attribute_values() -> None:
    """``[n]`` inside an attribute (a link title the model wrote) stays text: no tag inserted there."""
    from types import SimpleNamespace

    from apps.documents.answer_views import citations_html

    answer = SimpleNamespace(sources=[{"n": 1, "document_id": 7, "chunk_id": 9}])
    html = str(
        citations_html(
            answer,  # type: ignore[arg-type]
            'See [1]. [x](https://example.org/a "t [1] onmouseover=alert(1)") and `[1]`',
        )
    )
    assert html.count('data-testid="citation"') == 2  # the prose one and the one in code text
    assert 'title="t [1] onmouseover=alert(1)"' in html  # the attribute is untouched
