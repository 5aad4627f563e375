"""Builder: any number of field rows (htmx add/remove, up to MAX_FIELDS), file fields' limits and
errors in ja/en, and the catalogue decision shown to the proposer."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.aiapps import runs, services
from apps.aiapps.definition import MAX_FIELDS
from apps.aiapps.models import MinistryApp, PlatformApp, Proposal
from apps.audit.models import AuditEvent
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import Actor

from .conftest import client_for

FILE_APP = {
    "name_ja": "資料の要点",
    "prompt_template": "次の資料の要点:\n{{doc}}",
    "fields": [{"name": "doc", "label": "資料", "kind": "file", "options": [], "required": True}],
}


def _rows(n: int, *, required: tuple[int, ...] = (), keys: list[str] | None = None) -> dict[str, Any]:
    keys = keys or [f"k{i}" for i in range(n)]
    return {
        "name_ja": "多項目",
        "prompt_template": "".join(f"{{{{f{i}}}}}" for i in range(n)),
        "field_key": keys,
        "field_name": [f"f{i}" for i in range(n)],
        "field_label": [f"項目{i}" for i in range(n)],
        "field_kind": ["text"] * n,
        "field_options": [""] * n,
        "field_required": [keys[i] for i in sorted(required)],
    }


def test_rows_are_added_by_htmx_up_to_the_limit(staff_a: Actor) -> None:
    client = client_for(staff_a)
    page = client.get("/apps/builder/new").content.decode()
    assert page.count('data-testid="field-row"') == 3 and 'data-testid="field-add"' in page
    row = client.get("/apps/builder/field-row", {"field_key": ["a", "b"]}, HTTP_HX_REQUEST="true")
    body = row.content.decode()
    assert row.status_code == 200 and body.count('name="field_name"') == 1
    assert 'name="field_key"' in body and 'data-testid="field-remove"' in body
    full = client.get("/apps/builder/field-row", {"field_key": [str(i) for i in range(MAX_FIELDS)]})
    assert full.status_code == 200 and 'name="field_name"' not in full.content.decode()
    assert full["HX-Retarget"] == "#field-rows-note" and f"{MAX_FIELDS}個まで" in full.content.decode()
    english = client.get("/apps/builder/new", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Add a field" in english and "Remove this field" in english and "Up to 20 fields." in english
    removed = client.get("/apps/builder/field-row/remove")
    assert removed.status_code == 200 and removed.content == b""


def test_twenty_fields_saved_and_required_follows_each_rows_key(staff_a: Actor) -> None:
    assert MAX_FIELDS == 20
    client = client_for(staff_a)
    # Rows in any order (some removed in the page): 必須 belongs to the row whose key it posts.
    form = _rows(MAX_FIELDS, required=(0, 19), keys=[f"x{(i * 7) % 97}" for i in range(MAX_FIELDS)])
    created = client.post("/apps/builder/new", form)
    assert created.status_code == 302, created.content.decode()[:2000]
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        app = MinistryApp.objects.get(owner=staff_a.user)
    assert len(app.fields) == MAX_FIELDS
    assert [f["required"] for f in app.fields] == [i in (0, 19) for i in range(MAX_FIELDS)]
    edit = client.get(f"/apps/builder/{app.pk}/").content.decode()
    assert edit.count('data-testid="field-row"') == MAX_FIELDS  # all rows, no blank beyond the limit
    too_many = client.post("/apps/builder/new", _rows(MAX_FIELDS + 1))
    assert too_many.status_code == 422 and f"入力項目は{MAX_FIELDS}個までです" in too_many.content.decode()


def _file_app(actor: Actor) -> MinistryApp:
    with ministry_scope(ministry_id=actor.ministry.pk):
        return services.app_create(actor=actor.user, data=FILE_APP)


def test_file_field_refuses_unreadable_and_oversized_files_in_ja_and_en(
    staff_a: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _file_app(staff_a)
    client = client_for(staff_a)
    binary = SimpleUploadedFile("tool.exe", b"MZ\x90\x00\x03\x00\x00\x00" + bytes(range(256)) * 4)
    refused = client.post(f"/apps/m{app.pk}/", {"alias": "x", "level": "1", "doc": binary})
    text = refused.content.decode()
    # The documents parser's reason, in both languages, after the field's label.
    assert refused.status_code == 422
    assert "資料: 対応していない形式です（PDF、Word、Excel、PowerPoint、テキスト" in text
    assert (
        "Unsupported type (PDF, Word, Excel, PowerPoint, text, Markdown, HTML and CSV are supported)" in text
    )
    monkeypatch.setattr(runs, "MAX_FILE_BYTES", 10)
    big = SimpleUploadedFile("memo.txt", "会議メモ：予算は来週確定。".encode())
    ja = client.post(f"/apps/m{app.pk}/", {"alias": "x", "level": "1", "doc": big})
    assert ja.status_code == 422 and "「資料」のファイルが大きすぎます（10MBまで）。" in ja.content.decode()
    big.seek(0)
    en = client.post(f"/apps/m{app.pk}/", {"alias": "x", "level": "1", "doc": big}, HTTP_ACCEPT_LANGUAGE="en")
    assert en.status_code == 422 and "is too large (10 MB at most)" in en.content.decode()
    # Extracted text over the input limit is refused with the limit named.
    monkeypatch.setattr(runs, "MAX_FILE_BYTES", 10 * 1024 * 1024)
    long_text = SimpleUploadedFile("long.txt", ("あ" * (runs.MAX_INPUT_CHARS + 1)).encode())
    over = client.post(f"/apps/m{app.pk}/", {"alias": "x", "level": "1", "doc": long_text})
    assert over.status_code == 422 and f"{runs.MAX_INPUT_CHARS}文字以内" in over.content.decode()
    # A missing required file is named.
    missing = client.post(f"/apps/m{app.pk}/", {"alias": "x", "level": "1"})
    assert missing.status_code == 422 and "「資料」を入力してください。" in missing.content.decode()


@pytest.mark.parametrize("approve", [True, False])
def test_the_proposer_sees_the_catalogue_decision(
    staff_a: Actor, staff_b: Actor, platform_admin: Actor, approve: bool
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        app = services.app_create(
            actor=staff_a.user,
            data={
                "name_ja": "話題",
                "prompt_template": "{{topic}}",
                "fields": [
                    {"name": "topic", "label": "話題", "kind": "text", "options": [], "required": True}
                ],
            },
        )
    owner = client_for(staff_a)
    assert owner.post(f"/apps/builder/{app.pk}/propose").status_code == 302
    page = owner.get(f"/apps/builder/{app.pk}/").content.decode()
    assert 'data-status="proposed"' in page and 'data-testid="propose"' not in page
    proposal = PlatformApp.objects.get(source_app_id=app.pk, source_ministry_id=staff_a.ministry.pk)
    decided = client_for(platform_admin).post(
        "/apps/catalogue/proposals",
        {"platform_app": proposal.pk, "decision": "approve" if approve else "reject"},
    )
    assert decided.status_code == 302
    expected = Proposal.APPROVED if approve else Proposal.REJECTED
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert MinistryApp.objects.get(pk=app.pk).proposal == expected
    page = owner.get(f"/apps/builder/{app.pk}/").content.decode()
    assert f'data-status="{expected}"' in page and 'data-testid="propose"' in page
    assert ("カタログに掲載済み" if approve else "カタログ掲載は見送り") in page
    action = "aiapp.catalogue_approve" if approve else "aiapp.catalogue_reject"
    assert AuditEvent.objects.filter(action=action, target_id=str(proposal.pk)).exists()
    # Another ministry's app with the same id is never touched (RLS scope of the source ministry).
    with ministry_scope(ministry_id=staff_b.ministry.pk):
        assert not MinistryApp.objects.filter(proposal=expected).exists()
