"""Browser: upload several files into a workspace, watch the progress rows turn ready, per-file errors.

No Celery worker runs here: the upload queues its tasks, the rows show
"queued" and poll their status fragment; the test then runs the pipeline steps
in process (as a worker would) and the rows must update on their own and stop
polling. The ``page`` fixture fails the test on any CSP violation (the upload
page loads its drag-and-drop script as a static file).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from apps.documents import pipeline
from apps.documents.models import Document, DocumentStatus
from apps.documents.services import workspace_create
from apps.documents.tests import samples
from apps.documents.tests.conftest import fake_vector
from apps.tenancy.scope import ministry_scope

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not samples.NOTO_CJK.exists(), reason="fonts-noto-cjk not installed"),
]


def _sign_in(page: Any, base: str, user: Any) -> None:
    client = Client()
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": base}])


def test_upload_progress_and_errors(
    page: Any, live_server: Any, staff_a: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from apps.search import embeddings

    settings.GENNAI_DOCUMENTS_ROOT = tmp_path / "documents"
    monkeypatch.setattr(
        embeddings, "embed_passages", lambda *, ministry_id, texts, level=1: [fake_vector(t) for t in texts]
    )
    monkeypatch.setattr("apps.documents.services._enqueue", lambda *a, **k: None)  # no broker round trip
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        workspace_create(actor=staff_a.user, name="出張規程集", kind="shared", level=1)
    files = {
        "規程.pdf": samples.pdf_bytes(),
        "規程.docx": samples.docx_bytes(),
        "空.txt": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    _sign_in(page, live_server.url, staff_a.user)
    page.goto(f"{live_server.url}/documents/")
    page.get_by_role("link", name="出張規程集").click()
    page.set_input_files("#upload-files", [str(tmp_path / name) for name in files])
    page.get_by_role("button", name="アップロード").click()

    errors = page.locator("[data-testid=upload-error]")
    errors.first.wait_for()
    assert errors.count() == 1 and "0 バイト" in errors.first.inner_text()
    rows = page.locator("[data-testid=document-row]")
    assert rows.count() == 2
    assert page.locator("[data-testid=document-row][data-status=queued] progress").count() == 2

    with ministry_scope(ministry_id=staff_a.ministry.pk):
        ids = list(Document.objects.values_list("pk", flat=True))
        for document_id in ids:
            assert pipeline.run_parse_begin(document_id=document_id)
            assert pipeline.run_parse(document_id=document_id) == "embed"
            while pipeline.run_embed_batch(document_id=document_id):
                pass
        assert set(Document.objects.values_list("status", flat=True)) == {DocumentStatus.READY}

    # The rows poll every 1.5 s and swap themselves to "ready", then stop polling.
    page.locator("[data-testid=document-row][data-status=ready]").nth(1).wait_for(timeout=10_000)
    assert page.locator("[data-testid=document-row][hx-trigger]").count() == 0
    assert page.locator("[data-testid=document-status]").all_inner_texts() == ["完了", "完了"]
