"""Browser: ask a workspace → the streamed answer cites [1] → the citation opens the highlighted page.

The pipeline runs in process (as a worker would); the model is :class:`FakeUpstream`
answering ``[1]0 [1]1``. The ``page`` fixture fails the test on any CSP violation.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from apps.documents import pipeline
from apps.documents.models import Document
from apps.documents.selectors import get_workspace_for_actor
from apps.documents.services import workspace_create
from apps.documents.tests import samples
from apps.documents.tests.conftest import fake_vector
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.registry import Upstream, register_alias

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not samples.NOTO_CJK.exists(), reason="fonts-noto-cjk not installed"),
]

PAGES = ["第1章 総則\n出張の命令は所属長が行う。", "第2章 旅費\n宿泊料の上限は一泊一万二千円とする。"]


def test_ask_click_citation_shows_highlighted_page(
    page: Any, live_server: Any, staff_a: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.documents.services import document_upload
    from apps.search import embeddings

    settings.GENNAI_DOCUMENTS_ROOT = tmp_path / "documents"
    monkeypatch.setattr(
        embeddings, "embed_passages", lambda *, ministry_id, texts, level=1: [fake_vector(t) for t in texts]
    )
    monkeypatch.setattr(embeddings, "embed_query", lambda *, ministry_id, text, level=1: fake_vector(text))
    monkeypatch.setattr("apps.documents.services._enqueue", lambda *a, **k: None)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        workspace = workspace_create(actor=staff_a.user, name="出張規程集", kind="shared", level=1)
        workspace = get_workspace_for_actor(actor=staff_a.user, workspace_id=workspace.pk)
        document_upload(
            actor=staff_a.user,
            workspace=workspace,
            files=[SimpleUploadedFile("規程.pdf", samples.pdf_bytes(PAGES))],
        )
        for document_id in Document.objects.values_list("pk", flat=True):
            assert pipeline.run_parse_begin(document_id=document_id)
            assert pipeline.run_parse(document_id=document_id) == "embed"
            while pipeline.run_embed_batch(document_id=document_id):
                pass

    with FakeUpstream(tokens=2, word="[1]") as fake:
        register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        client = Client()
        client.force_login(staff_a.user)
        cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
        page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
        page.goto(f"{live_server.url}/documents/workspaces/{workspace.pk}/")
        page.get_by_test_id("ask-link").click()
        page.fill("#ask-question", "宿泊料の上限はいくらですか")
        page.get_by_test_id("ask-submit").click()
        citation = page.locator("[data-testid=citation][data-n='1']").first
        citation.wait_for(timeout=15_000)
        assert page.locator("[data-testid=source]").count() >= 1
        citation.click()
    image = page.locator("[data-testid=viewer-page][data-page='2'] img")
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert "規程.pdf" in page.get_by_test_id("viewer-document").inner_text()
