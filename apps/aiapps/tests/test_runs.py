"""Running apps: 校正 findings + streamed model output, usage metered, classification gate, isolation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from apps.aiapps import kobun
from apps.aiapps.models import AppRun, PlatformApp
from apps.chat.models import Message, Status
from apps.chat.tests.factories import run_stream
from apps.quotas.models import UsageRecord
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.local_model import LocalModel
from tests.support.registry import Upstream, register_alias

from .conftest import client_for

SAMPLE = "本件の取り扱いについて、参加者は十二人である。手続きを行なって下さい。"


def _kobun_ref() -> str:
    return f"p{PlatformApp.objects.get(key='kobun').pk}"


def _run_of(actor: Actor, response: Any) -> AppRun:
    assert response.status_code == 302, response.content.decode()[:3000]
    run_id = int(re.search(r"/apps/runs/(\d+)/", response["Location"]).group(1))  # type: ignore[union-attr]
    with ministry_scope(ministry_id=actor.ministry.pk):
        return AppRun.objects.select_related("message").get(pk=run_id)


def _start(actor: Actor, ref: str, alias: str, level: int = 1, **fields: str) -> AppRun:
    data = {"alias": alias, "level": str(level), **fields}
    return _run_of(actor, client_for(actor).post(f"/apps/{ref}/", data))


def test_kobun_run_shows_deterministic_findings_and_streams_the_model(staff_a: Actor) -> None:
    expected = sorted(kobun.check(SAMPLE), key=lambda f: f.start)
    assert {f.rule for f in expected} >= {"okurigana.noun", "number.kanji", "okurigana.verb", "kana.formal"}
    with FakeUpstream(tokens=3, word="説明") as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        run = _start(staff_a, _kobun_ref(), reg.alias.name, text=SAMPLE)
        page = client_for(staff_a).get(f"/apps/runs/{run.pk}/").content.decode()
        result = run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream")
        prompt = fake.last_body["messages"]

    assert run.findings == [f.as_dict() for f in expected]
    assert run.corrected == kobun.apply_suggestions(SAMPLE, expected)
    # The page marks each finding at its offsets before the model says anything.
    marks = re.findall(r'<mark [^>]*data-rule="([\w.]+)"[^>]*>([^<]*)</mark>', page)
    fixable = [f for f in expected if f.suggestion is not None]
    assert marks == [(f.rule, SAMPLE[f.start : f.end]) for f in fixable] and len(marks) == 5
    listed = re.findall(r'data-testid="finding" data-rule="([\w.]+)" data-start="(\d+)"', page)
    assert listed == [(f.rule, str(f.start)) for f in expected]  # sentence advice (ending.mixed) too
    assert f'sse-connect="/apps/runs/{run.pk}/stream"' in page
    # The model gets the findings and the mechanically corrected text, and explains/rewrites.
    assert "# 機械的な点検結果" in prompt[1]["content"] and run.corrected in prompt[1]["content"]
    assert "公用文作成の考え方" in prompt[0]["content"]
    assert result.tokens == ["説明0 ", "説明1 ", "説明2 "]
    assert result.done is not None and 'data-status="complete"' in result.done.data
    assert "<p>説明0 説明1 説明2</p>" in result.done.data  # sanitised Markdown, not escaped
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        message = Message.objects.get(pk=run.message_id)
        usage = UsageRecord.objects.get(request_id__isnull=False, feature="app", user_id=staff_a.user.pk)
    assert message.status == Status.COMPLETE and message.content == "説明0 説明1 説明2 "
    assert usage.status == "ok" and usage.completion_tokens == 3 and usage.alias_name == reg.alias.name


def test_kobun_findings_survive_a_failing_model(staff_a: Actor) -> None:
    with FakeUpstream(mode="status", status=500) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        run = _start(staff_a, _kobun_ref(), reg.alias.name, text=SAMPLE)
        result = run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream")
    assert result.done is not None and 'data-status="error"' in result.done.data
    page = client_for(staff_a).get(f"/apps/runs/{run.pk}/").content.decode()
    assert page.count('data-testid="finding"') == len(kobun.check(SAMPLE))
    assert "取扱い" in page and "12人" in page  # the deterministic corrections are shown regardless
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert UsageRecord.objects.filter(feature="app", status="error").count() == 1


def test_classification_gate_refuses_a_level_the_model_is_not_cleared_for(staff_a: Actor) -> None:
    with FakeUpstream() as fake:
        reg = register_alias(upstreams=[Upstream(fake.url, clearance=1)], ministries=[staff_a.ministry])
        ref = f"p{PlatformApp.objects.get(key='summarize').pk}"
        data = {"alias": reg.alias.name, "level": "3", "text": "機密の文書", "length": "3行程度"}
        refused = client_for(staff_a).post(f"/apps/{ref}/", data)
        assert fake.requests == 0
    assert refused.status_code == 422
    assert "この機密性の区分では利用できません" in refused.content.decode()
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert not AppRun.objects.exists()


def test_inputs_validated_and_runs_private_to_their_user(
    staff_a: Actor, colleague_a: Actor, staff_b: Actor
) -> None:
    ref = f"p{PlatformApp.objects.get(key='summarize').pk}"
    with FakeUpstream(tokens=1) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        bad = client_for(staff_a).post(
            f"/apps/{ref}/", {"alias": reg.alias.name, "text": "", "length": "長編"}
        )
        assert bad.status_code == 422
        body = bad.content.decode()
        assert "「本文」を入力してください。" in body and "「長さ」の選択肢が正しくありません。" in body
        run = _start(staff_a, ref, reg.alias.name, text="本文です。", length="3行程度")
        for other in (colleague_a, staff_b):
            assert client_for(other).get(f"/apps/runs/{run.pk}/").status_code == 404
            assert run_stream(other.user, f"/apps/runs/{run.pk}/stream").status_code == 404
        assert run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream").done is not None
        assert "「3行程度」で要約" in fake.last_body["messages"][1]["content"]
    history = client_for(staff_a).get("/apps/runs/").content.decode()
    assert history.count('data-testid="run-row"') == 1


@pytest.mark.django_db(transaction=True)
def test_kobun_with_the_real_local_model(
    local_model: LocalModel, staff_a: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SmolLM2-135M is a weak model: the findings and corrections still come from the rules."""
    from apps.chat import services as chat_services

    monkeypatch.setattr(chat_services, "MAX_ANSWER_TOKENS", 24)  # a short answer on a shared CPU
    reg = register_alias(
        upstreams=[Upstream(local_model.url, served_model_name=local_model.served_model_name)],
        ministries=[staff_a.ministry],
    )
    run = _start(staff_a, _kobun_ref(), reg.alias.name, text=SAMPLE)
    result = run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream", timeout=120)
    assert len(result.tokens) >= 2
    assert result.done is not None and 'data-status="complete"' in result.done.data
    assert 'data-testid="finding"' not in result.done.data  # the findings block stays on the page
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        message = Message.objects.get(pk=run.message_id)
        assert message.status == Status.COMPLETE and message.content.strip()
        assert UsageRecord.objects.filter(feature="app", status="ok").count() == 1


def test_a_file_field_sends_the_extracted_text(staff_a: Actor) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.aiapps import services

    definition = {
        "name_ja": "資料の要点",
        "prompt_template": "次の資料の要点:\n{{doc}}",
        "fields": [{"name": "doc", "label": "資料", "kind": "file", "options": [], "required": True}],
    }
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        app = services.app_create(actor=staff_a.user, data=definition)
    with FakeUpstream(tokens=1) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        upload = SimpleUploadedFile("memo.md", "# 会議メモ\n\n予算は来週確定する。".encode())
        run = _run_of(
            staff_a,
            client_for(staff_a).post(
                f"/apps/m{app.pk}/", {"alias": reg.alias.name, "level": "1", "doc": upload}
            ),
        )
        run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream")
        sent = fake.last_body["messages"][-1]["content"]
    assert sent.startswith("次の資料の要点:\n") and "予算は来週確定する。" in sent
    assert "予算は来週確定する。" in run.inputs["doc"]


def test_a_run_can_be_stopped_by_its_user_only(staff_a: Actor, staff_b: Actor) -> None:
    ref = f"p{PlatformApp.objects.get(key='summarize').pk}"
    with FakeUpstream(tokens=1) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        run = _start(staff_a, ref, reg.alias.name, text="本文です。", length="3行程度")
        assert client_for(staff_b).post(f"/apps/runs/{run.pk}/stop").status_code == 404
        assert client_for(staff_a).post(f"/apps/runs/{run.pk}/stop").status_code == 302
        result = run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream")
        assert fake.requests == 0  # stopped before the stream claimed it: no model call
    assert result.done is not None and 'data-status="interrupted"' in result.done.data
