"""The use-case builder: variables validated, sharing within the ministry only, import/export, catalogue."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import translation

from apps.aiapps import services
from apps.aiapps.definition import clean_definition, render_prompt
from apps.aiapps.models import CatalogueStatus, MinistryApp, PlatformApp, Visibility
from apps.audit.models import AuditEvent
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import Actor

from .conftest import client_for

FIELD = {"name": "topic", "label": "話題", "kind": "text", "options": [], "required": True}
DEF = {"name_ja": "話題の説明", "prompt_template": "{{topic}}について説明してください。", "fields": [FIELD]}


def _errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as excinfo:
        clean_definition(data)
    return excinfo.value.messages


def test_every_placeholder_must_be_a_field_and_every_field_used() -> None:
    assert clean_definition(DEF)["fields"] == [FIELD]
    undeclared = _errors({**DEF, "prompt_template": "{{topic}} と {{tone}}"})
    assert undeclared == ["プロンプトの変数 {{tone}} に対応する入力項目がありません。"]
    unused = _errors({**DEF, "prompt_template": "説明してください。"})
    assert unused == ["入力項目 topic がプロンプトで使われていません。"]
    with translation.override("en"):
        assert _errors({**DEF, "prompt_template": "説明してください。"}) == [
            "The field(s) topic are not used in the prompt."
        ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"fields": [{**FIELD, "name": "Topic"}], "prompt_template": "{{Topic}}"}, "入力項目名「Topic」"),
        ({"fields": [{**FIELD, "name": "1x"}], "prompt_template": "{{1x}}"}, "入力項目名「1x」"),
        ({"fields": [FIELD, FIELD]}, "入力項目名が重複しています: topic"),
        ({"fields": [{**FIELD, "kind": "choice"}]}, "選択肢を1〜30個"),
        ({"fields": [{**FIELD, "kind": "script"}]}, "種類が正しくありません"),
        ({"system_prompt": "{{topic}}"}, "システムプロンプトには変数を使えません"),
        ({"name_ja": ""}, "名前（日本語）を入力してください。"),
    ],
)
def test_builder_rejects_bad_definitions_with_clear_messages(change: dict[str, Any], expected: str) -> None:
    assert any(expected in m for m in _errors({**DEF, **change}))


def test_rendering_does_not_expand_placeholders_inside_values() -> None:
    assert render_prompt("{{ a }}/{{b}}", {"a": "{{b}}", "b": "x"}) == "{{b}}/x"


def test_builder_form_preview_and_errors(staff_a: Actor) -> None:
    client = client_for(staff_a)
    form = {
        "name_ja": "話題の説明",
        "prompt_template": "{{topic}}について{{tone}}説明してください。",
        "field_name": ["topic", ""],
        "field_label": ["話題", ""],
        "field_kind": ["text", "text"],
        "field_options": ["", ""],
        "field_required": ["0"],
    }
    bad = client.post("/apps/builder/new", form)
    assert bad.status_code == 422 and "{{tone}} に対応する入力項目がありません" in bad.content.decode()
    preview = client.post(
        "/apps/builder/preview", {**form, "prompt_template": "{{topic}}の説明", "sample_topic": "防災"}
    )
    assert preview.status_code == 200 and "防災の説明" in preview.content.decode()
    created = client.post("/apps/builder/new", {**form, "prompt_template": "{{topic}}の説明"})
    assert created.status_code == 302
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        app = MinistryApp.objects.get(owner=staff_a.user)
        assert app.visibility == Visibility.PRIVATE and app.fields[0]["name"] == "topic"
        assert AuditEvent.objects.filter(action="aiapp.create", target_id=str(app.pk)).exists()


def _make(actor: Actor, **extra: Any) -> MinistryApp:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return services.app_create(actor=actor.user, data={**DEF, **extra})


def test_a_shared_app_is_visible_in_the_same_ministry_only(
    staff_a: Actor, colleague_a: Actor, staff_b: Actor
) -> None:
    app = _make(staff_a)
    url = f"/apps/m{app.pk}/"
    assert client_for(staff_a).get(url).status_code == 200
    assert client_for(colleague_a).get(url).status_code == 404  # private: a colleague cannot see it
    assert (
        client_for(colleague_a)
        .post(f"/apps/builder/{app.pk}/visibility", {"visibility": "ministry"})
        .status_code
        == 404
    )
    assert (
        client_for(staff_a).post(f"/apps/builder/{app.pk}/visibility", {"visibility": "ministry"}).status_code
        == 302
    )
    assert client_for(colleague_a).get(url).status_code == 200
    catalogue = client_for(colleague_a).get("/apps/").content.decode()
    assert f'data-ref="m{app.pk}" data-section="shared"' in catalogue
    # Another ministry: 404 on the app, its export and its favourite; absent from the catalogue.
    b = client_for(staff_b)
    assert b.get(url).status_code == 404
    assert b.get(f"/apps/m{app.pk}/export.json").status_code == 404
    assert b.post(f"/apps/m{app.pk}/favourite").status_code == 404
    assert f'data-ref="m{app.pk}"' not in b.get("/apps/").content.decode()
    # Only the owner edits, even when shared.
    assert client_for(colleague_a).get(f"/apps/builder/{app.pk}/").status_code == 404


def test_export_import_round_trips_and_never_trusts_ids(staff_a: Actor, staff_b: Actor) -> None:
    app = _make(staff_a, description_en="Explains a topic", output_format="plain")
    exported = client_for(staff_a).get(f"/apps/m{app.pk}/export.json")
    assert exported.status_code == 200
    data = json.loads(exported.content)
    assert "id" not in data and "owner" not in data
    # A tampered file: ids, owner, visibility, ministry and workspace are ignored.
    data.update(
        id=app.pk, owner=staff_a.user.pk, visibility="ministry", ministry=staff_a.ministry.pk, workspace=1
    )
    upload = SimpleUploadedFile("app.json", json.dumps(data).encode(), content_type="application/json")
    response = client_for(staff_b).post("/apps/builder/import", {"file": upload})
    assert response.status_code == 302
    new_id = int(re.search(r"/builder/(\d+)/", response["Location"]).group(1))  # type: ignore[union-attr]
    with ministry_scope(ministry_id=staff_b.ministry.pk):
        imported = MinistryApp.objects.get(pk=new_id)
    assert imported.pk != app.pk and imported.owner_id == staff_b.user.pk
    assert imported.ministry_id == staff_b.ministry.pk and imported.visibility == Visibility.PRIVATE
    assert imported.workspace_id is None
    assert services.app_export(app=imported) == services.app_export(app=app)
    # Imports are validated like the form.
    broken = {**data, "prompt_template": "{{missing}}"}
    upload = SimpleUploadedFile("bad.json", json.dumps(broken).encode())
    refused = client_for(staff_b).post("/apps/builder/import", {"file": upload})
    assert (
        refused.status_code == 422
        and "{{missing}} に対応する入力項目がありません" in refused.content.decode()
    )


def test_built_ins_are_seeded_and_exportable(staff_a: Actor) -> None:
    keys = set(PlatformApp.objects.filter(builtin=True).values_list("key", flat=True))
    assert keys == {"summarize", "kobun", "translate", "draft", "minutes", "diet_answer"}
    for app in PlatformApp.objects.filter(builtin=True):
        clean_definition(services.app_export(app=app), kind=app.kind)  # each passes the builder's rules
    page = client_for(staff_a).get("/apps/").content.decode()
    assert page.count('data-section="builtin"') == 6


def test_proposal_is_approved_by_a_platform_admin_only_and_audited(
    staff_a: Actor, staff_b: Actor, platform_admin: Actor
) -> None:
    app = _make(staff_a)
    assert client_for(staff_a).post(f"/apps/builder/{app.pk}/propose").status_code == 302
    proposal = PlatformApp.objects.get(source_app_id=app.pk, source_ministry_id=staff_a.ministry.pk)
    assert proposal.status == CatalogueStatus.PROPOSED
    assert f'data-ref="p{proposal.pk}"' not in client_for(staff_b).get("/apps/").content.decode()
    with pytest.raises(PermissionDenied):
        services.proposal_decide(actor=staff_a.user, platform_app_id=proposal.pk, approve=True)
    assert client_for(staff_a).get("/apps/catalogue/proposals").status_code == 403
    decided = client_for(platform_admin).post(
        "/apps/catalogue/proposals", {"platform_app": proposal.pk, "decision": "approve"}
    )
    assert decided.status_code == 302
    proposal.refresh_from_db()
    assert proposal.status == CatalogueStatus.APPROVED and proposal.approved_by_id == platform_admin.user.pk
    assert AuditEvent.objects.filter(action="aiapp.catalogue_approve", target_id=str(proposal.pk)).exists()
    catalogue_b = client_for(staff_b).get("/apps/").content.decode()
    assert f'data-ref="p{proposal.pk}" data-section="platform"' in catalogue_b
    assert client_for(staff_b).get(f"/apps/p{proposal.pk}/").status_code == 200


def test_favourites_come_first(staff_a: Actor) -> None:
    kobun = PlatformApp.objects.get(key="kobun")
    client = client_for(staff_a)
    assert client.post(f"/apps/p{kobun.pk}/favourite").status_code == 302
    refs = re.findall(r'data-ref="(\w+)"', client.get("/apps/").content.decode())
    assert refs[0] == f"p{kobun.pk}"
    client.post(f"/apps/p{kobun.pk}/favourite")  # toggles off
    refs = re.findall(r'data-ref="(\w+)"', client.get("/apps/").content.decode())
    assert refs[0] == f"p{PlatformApp.objects.get(key='summarize').pk}"


def test_catalogue_in_english_and_the_model_picker_per_level(staff_a: Actor) -> None:
    client = client_for(staff_a)
    page = client.get("/apps/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Proofread (official style)" in page and "Diet answer draft" in page and "Built-in" in page
    picker = client.get("/apps/alias-options", {"level": "3"}).content.decode()
    assert 'data-testid="no-models"' in picker and "機密性3" in picker
