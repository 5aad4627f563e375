"""Pages: outsiders get 404 everywhere; upload, progress fragment, members."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from apps.documents.models import Document, DocumentStatus, MemberRole, WorkspaceMember
from apps.tenancy.scope import ministry_scope

from . import samples
from .factories import ready_document_of_staff_a


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def document_of_a(staff_a: Any) -> Document:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        return ready_document_of_staff_a(staff_a.ministry)


def _urls(document: Document) -> list[tuple[str, str]]:
    ws = document.workspace_id
    return [
        ("get", reverse("documents:workspace", args=[ws])),
        ("get", reverse("documents:members", args=[ws])),
        ("get", reverse("documents:workspace_delete", args=[ws])),
        ("post", reverse("documents:workspace_delete", args=[ws])),
        ("post", reverse("documents:upload", args=[ws])),
        ("get", reverse("documents:status", args=[document.pk])),
        ("get", reverse("documents:download", args=[document.pk])),
        ("get", reverse("documents:delete", args=[document.pk])),
        ("post", reverse("documents:delete", args=[document.pk])),
    ]


@pytest.mark.parametrize("who", ["other_ministry", "non_member_colleague"])
def test_outsiders_get_404_everywhere(
    who: str, document_of_a: Document, staff_a: Any, staff_b: Any, colleague_a: Any
) -> None:
    outsider = _client(staff_b.user if who == "other_ministry" else colleague_a)
    for method, url in _urls(document_of_a):
        assert getattr(outsider, method)(url).status_code == 404, (method, url)
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert Document.objects.get(pk=document_of_a.pk).status == DocumentStatus.READY
    # Nothing of A's in the outsider's list either.
    assert "A の文書" not in outsider.get(reverse("documents:index")).content.decode()


def test_owner_sees_and_downloads(document_of_a: Document, staff_a: Any) -> None:
    owner = _client(staff_a.user)
    assert owner.get(reverse("documents:workspace", args=[document_of_a.workspace_id])).status_code == 200
    download = owner.get(reverse("documents:download", args=[document_of_a.pk]))
    assert download.status_code == 200 and b"".join(download.streaming_content) == "本文です。".encode()
    assert "attachment" in download["Content-Disposition"]


def test_upload_several_files_each_judged_alone(
    staff_a: Any, shared_workspace: Any, django_capture_on_commit_callbacks: Any
) -> None:
    owner = _client(staff_a.user)
    url = reverse("documents:upload", args=[shared_workspace.pk])
    with django_capture_on_commit_callbacks(execute=False):
        response = owner.post(
            url,
            {
                "files": [
                    SimpleUploadedFile("ok.csv", samples.csv_bytes()),
                    SimpleUploadedFile("empty.pdf", b""),
                    SimpleUploadedFile("bomb.docx", samples.zip_bomb_docx()),
                ]
            },
            headers={"HX-Request": "true"},
        )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.count('data-testid="upload-error"') == 2
    assert "0 バイト" in body and "圧縮爆弾" in body
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        [document] = Document.objects.all()
    # The new row polls its status fragment until the pipeline is done.
    assert f'hx-get="{reverse("documents:status", args=[document.pk])}"' in body
    status = owner.get(reverse("documents:status", args=[document.pk])).content.decode()
    assert 'hx-trigger="every 1.5s"' in status and "<progress" in status
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        Document.objects.filter(pk=document.pk).update(status=DocumentStatus.READY)
    done = owner.get(reverse("documents:status", args=[document.pk])).content.decode()
    assert "hx-trigger" not in done and 'data-status="ready"' in done


def test_members_viewer_reads_but_cannot_upload_and_other_ministry_cannot_be_added(
    staff_a: Any, staff_b: Any, colleague_a: Any, shared_workspace: Any
) -> None:
    owner = _client(staff_a.user)
    members_url = reverse("documents:members", args=[shared_workspace.pk])
    assert owner.post(members_url, {"username": "colleague-a", "role": "viewer"}).status_code == 302
    refused = owner.post(members_url, {"username": "staff-b", "role": "viewer"})
    assert refused.status_code == 422
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        roles = dict(WorkspaceMember.objects.values_list("user__username", "role"))
    assert roles == {"staff-a": MemberRole.OWNER, "colleague-a": MemberRole.VIEWER}
    viewer = _client(colleague_a)
    assert viewer.get(reverse("documents:workspace", args=[shared_workspace.pk])).status_code == 200
    upload = viewer.post(
        reverse("documents:upload", args=[shared_workspace.pk]),
        {"files": [SimpleUploadedFile("a.csv", samples.csv_bytes())]},
    )
    assert upload.status_code == 403
    assert viewer.post(reverse("documents:workspace_delete", args=[shared_workspace.pk])).status_code == 403
    # Still invisible to ministry B.
    assert (
        _client(staff_b.user).get(reverse("documents:workspace", args=[shared_workspace.pk])).status_code
        == 404
    )


def test_create_workspace_and_missing_looks_like_foreign(
    staff_a: Any, staff_b: Any, document_of_a: Document
) -> None:
    owner = _client(staff_a.user)
    response = owner.post(reverse("documents:index"), {"name": "個人メモ", "kind": "personal", "level": "2"})
    assert response.status_code == 302
    assert owner.get(response["Location"]).status_code == 200
    outsider = _client(staff_b.user)
    assert outsider.get(reverse("documents:status", args=[document_of_a.pk])).status_code == 404
    assert outsider.get(reverse("documents:status", args=[999_999_999])).status_code == 404


def test_polling_a_document_that_went_away_stops_the_poll(
    document_of_a: Document, staff_a: Any, staff_b: Any
) -> None:
    url = reverse("documents:status", args=[document_of_a.pk])
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        Document.objects.filter(pk=document_of_a.pk).update(status=DocumentStatus.DELETING)
    stopped = _client(staff_a.user).get(url, headers={"HX-Request": "true"})
    assert stopped.status_code == 286 and stopped.content == b""
    # Another ministry's poll gets exactly the same answer as a missing id.
    foreign = _client(staff_b.user).get(url, headers={"HX-Request": "true"})
    missing = _client(staff_b.user).get(
        reverse("documents:status", args=[999_999_999]), headers={"HX-Request": "true"}
    )
    assert (foreign.status_code, foreign.content) == (missing.status_code, missing.content) == (286, b"")
    assert _client(staff_a.user).get(url).status_code == 404


def test_pages_in_english(staff_a: Any, shared_workspace: Any) -> None:
    client = _client(staff_a.user)
    client.cookies["django_language"] = "en"
    html = client.get(
        reverse("documents:workspace", args=[shared_workspace.pk]), headers={"Accept-Language": "en"}
    ).content.decode()
    assert "Upload" in html and "No documents yet." in html
