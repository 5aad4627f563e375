"""国会答弁案: a Diet answer grounded in a workspace, with numbered sources and citation links.

Real ingestion (eager Celery, PostgreSQL search backend, deterministic embedder) as in the
documents tests; the fake model's answer is ``[1]0 [1]1`` so it cites source 1.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.aiapps.models import PlatformApp
from apps.chat.tests.factories import run_stream
from apps.documents.models import Document, DocumentStatus
from apps.documents.services import document_upload
from apps.documents.tests.conftest import (  # noqa: F401  (fixtures)
    eager,
    embedder,
    fake_vector,
    media_root,
    shared_workspace,
)
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

from .conftest import client_for
from .test_runs import _run_of

MEMO = "テレワーク実施要領\n\n在宅勤務の申請は前日の正午までに行う。\n\n勤務場所は自宅に限る。"


@pytest.fixture
def memo(
    staff_a: Actor,
    shared_workspace: Any,  # noqa: F811
    embedder: Any,  # noqa: F811
    eager: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> Document:
    from apps.search import embeddings

    monkeypatch.setattr(embeddings, "embed_query", lambda *, ministry_id, text, level=1: fake_vector(text))
    with django_capture_on_commit_callbacks(execute=True), ministry_scope(ministry_id=staff_a.ministry.pk):
        document_upload(
            actor=staff_a.user,
            workspace=shared_workspace,
            files=[SimpleUploadedFile("テレワーク.txt", MEMO.encode())],
        )
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        document = Document.objects.get(workspace=shared_workspace)
    assert document.status == DocumentStatus.READY
    return document


def test_diet_answer_cites_the_workspace(
    staff_a: Actor,
    colleague_a: Actor,
    shared_workspace: Any,  # noqa: F811
    memo: Document,
) -> None:
    ref = f"p{PlatformApp.objects.get(key='diet_answer').pk}"
    question = "在宅勤務の申請期限は"
    with FakeUpstream(tokens=2, word="[1]") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        data = {"alias": reg.alias.name, "level": "1", "question": question, "workspace": shared_workspace.pk}
        # A colleague who is not a member of the workspace cannot ground an app in it.
        assert client_for(colleague_a).post(f"/apps/{ref}/", data).status_code == 404
        run = _run_of(staff_a, client_for(staff_a).post(f"/apps/{ref}/", data))
        result = run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream")
        prompt = fake.last_body["messages"]
    assert run.sources and run.sources[0]["document_id"] == memo.pk
    assert (
        prompt[1]["content"].startswith("# 資料\n\n[1] テレワーク.txt\n")
        and "前日の正午" in prompt[1]["content"]
    )
    assert question in prompt[1]["content"] and "[1]" in prompt[0]["content"]
    done = result.done
    assert done is not None and 'data-status="complete"' in done.data
    passage = f"/documents/documents/{memo.pk}/passage/{run.sources[0]['chunk_id']}/"
    assert f'href="{passage}" data-testid="citation" data-n="1"' in done.data
    # Without a workspace the app refuses to run (nothing to ground the answer in).
    missing = client_for(staff_a).post(f"/apps/{ref}/", {**data, "workspace": ""})
    assert missing.status_code == 422 and "ワークスペースを選んでください" in missing.content.decode()


def test_an_attached_workspace_is_only_a_default_for_members(
    staff_a: Actor,
    colleague_a: Actor,
    shared_workspace: Any,  # noqa: F811
) -> None:
    from apps.aiapps import services

    definition = {
        "name_ja": "規程の確認",
        "prompt_template": "{{q}}",
        "fields": [{"name": "q", "label": "質問", "kind": "text", "options": [], "required": True}],
        "uses_workspace": True,
    }
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        app = services.app_create(actor=staff_a.user, data=definition, workspace_id=shared_workspace.pk)
        services.app_set_visibility(actor=staff_a.user, app_id=app.pk, visibility="ministry")
    owner_form = client_for(staff_a).get(f"/apps/m{app.pk}/").content.decode()
    assert f'<option value="{shared_workspace.pk}" selected>' in owner_form
    colleague_form = client_for(colleague_a).get(f"/apps/m{app.pk}/").content.decode()
    assert shared_workspace.name not in colleague_form  # not a member: not offered
    with FakeUpstream(tokens=1) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        data = {"alias": reg.alias.name, "level": "1", "q": "出張旅費は", "workspace": shared_workspace.pk}
        assert client_for(colleague_a).post(f"/apps/m{app.pk}/", data).status_code == 404
        run = _run_of(
            colleague_a, client_for(colleague_a).post(f"/apps/m{app.pk}/", {**data, "workspace": ""})
        )
    assert run.workspace_id_used is None and run.sources == []
