"""Attacks on the builder's templated prompts: a template that repeats a placeholder multiplies its
input (a 20,000-character value × 4,000 uses is an 80-million-character prompt), in the preview, in
a run and at stream time after the owner edits a shared app."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import translation

from apps.aiapps import services
from apps.aiapps.definition import MAX_RENDERED_CHARS, render_prompt
from apps.aiapps.models import AppRun, MinistryApp
from apps.chat.models import Message, Status
from apps.chat.tests.factories import run_stream
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import Actor
from tests.support.registry import Upstream, register_alias

from .conftest import client_for

FIELD = {"name": "a", "label": "本文", "kind": "text", "options": [], "required": True}
REPEATED = "{{a}}" * 1000  # 5,000 characters of template, 1,000 uses of the same value
VALUE = "あ" * 1000  # rendered: 1,000,000 characters


def _app(actor: Actor, template: str) -> MinistryApp:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return services.app_create(
            actor=actor.user, data={"name_ja": "増幅", "prompt_template": template, "fields": [FIELD]}
        )


def test_render_prompt_refuses_an_output_beyond_the_limit_before_building_it() -> None:
    assert len(render_prompt("{{a}}{{a}}", {"a": "x" * 10})) == 20
    with pytest.raises(ValidationError) as refused:
        render_prompt(REPEATED, {"a": VALUE})
    assert f"{MAX_RENDERED_CHARS:,}" in refused.value.messages[0]
    with translation.override("en"), pytest.raises(ValidationError) as english:
        render_prompt(REPEATED, {"a": VALUE})
    assert english.value.messages[0].startswith("The whole prompt is too long")


def test_preview_refuses_a_template_that_multiplies_its_sample(staff_a: Actor) -> None:
    form: dict[str, Any] = {
        "name_ja": "増幅",
        "prompt_template": REPEATED,
        "field_name": ["a"],
        "field_label": ["本文"],
        "field_kind": ["text"],
        "field_options": [""],
        "field_required": ["0"],
        "sample_a": VALUE,
    }
    response = client_for(staff_a).post("/apps/builder/preview", form)
    assert response.status_code == 422
    assert len(response.content) < 100_000
    assert "プロンプト全体が長すぎます" in response.content.decode()


def test_a_run_refuses_a_template_that_multiplies_its_input(staff_a: Actor) -> None:
    app = _app(staff_a, REPEATED)
    with FakeUpstream(tokens=2) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        response = client_for(staff_a).post(
            f"/apps/m{app.pk}/", {"alias": reg.alias.name, "level": "1", "a": VALUE}
        )
    assert response.status_code == 422
    assert "プロンプト全体が長すぎます" in response.content.decode()
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert not AppRun.objects.exists()
        assert not Message.objects.filter(conversation__owner=staff_a.user).exists()
    assert fake.requests == 0


def test_an_app_edited_to_multiply_after_the_run_started_never_reaches_the_model(
    staff_a: Actor, colleague_a: Actor
) -> None:
    app = _app(staff_a, "{{a}}")
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        services.app_set_visibility(actor=staff_a.user, app_id=app.pk, visibility="ministry")
    with FakeUpstream(tokens=2) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        response = client_for(colleague_a).post(
            f"/apps/m{app.pk}/", {"alias": reg.alias.name, "level": "1", "a": VALUE}
        )
        assert response.status_code == 302
        with ministry_scope(ministry_id=staff_a.ministry.pk):
            run = AppRun.objects.get(user=colleague_a.user)
            services.app_update(
                actor=staff_a.user,
                app_id=app.pk,
                data={"name_ja": "増幅", "prompt_template": REPEATED, "fields": [FIELD]},
            )
        result = run_stream(colleague_a.user, f"/apps/runs/{run.pk}/stream")
    assert result.status_code == 200
    assert fake.requests == 0
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        message = Message.objects.get(pk=run.message_id)
    assert message.status == Status.ERROR and "プロンプト全体が長すぎます" in message.error


@pytest.mark.parametrize(
    ("language", "expected"),
    [("ja", "アプリ定義ファイルは1MBまでです。"), ("en", "An app definition file must be at most 1 MB.")],
)
def test_an_oversized_or_missing_import_file_is_explained(
    staff_a: Actor, language: str, expected: str
) -> None:
    big = SimpleUploadedFile("app.json", b" " * (1024 * 1024 + 1), content_type="application/json")
    client = client_for(staff_a)
    for data in ({"file": big}, {}):
        response = client.post("/apps/builder/import", data, headers={"accept-language": language})
        assert response.status_code == 422 and expected in response.content.decode()


def test_an_unknown_visibility_is_refused_not_a_server_error(staff_a: Actor) -> None:
    app = _app(staff_a, "{{a}}")
    client = client_for(staff_a)
    response = client.post(f"/apps/builder/{app.pk}/visibility", {"visibility": "everyone"})
    assert response.status_code == 400 and "公開範囲が正しくありません" in response.content.decode()
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        app.refresh_from_db()
    assert app.visibility == "private"


def test_a_run_whose_app_was_deleted_sends_its_saved_prompt_as_is(staff_a: Actor) -> None:
    fields = [FIELD, {**FIELD, "name": "b", "label": "補足"}]
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        app = services.app_create(
            actor=staff_a.user, data={"name_ja": "二項目", "prompt_template": "{{a}}/{{b}}", "fields": fields}
        )
    with FakeUpstream(tokens=2) as fake:
        reg = register_alias(upstreams=[Upstream(fake.url)], ministries=[staff_a.ministry])
        response = client_for(staff_a).post(
            f"/apps/m{app.pk}/", {"alias": reg.alias.name, "level": "1", "a": "{{b}}", "b": "秘"}
        )
        assert response.status_code == 302
        with ministry_scope(ministry_id=staff_a.ministry.pk):
            run = AppRun.objects.get(user=staff_a.user)
            services.app_delete(actor=staff_a.user, app_id=app.pk)
        run_stream(staff_a.user, f"/apps/runs/{run.pk}/stream")
    # The value "{{b}}" is text the user typed: never expanded, neither at the start nor now.
    assert fake.last_body["messages"] == [{"role": "user", "content": "{{b}}/秘"}]
