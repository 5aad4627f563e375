"""Security review: what a colleague inside a workspace, or an uploader of crafted files, must not get.

Outsiders (another ministry, a colleague who is not a member) are covered by
``test_views.py`` and ``test_answers.py``; these cases are about members and files.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from PIL import Image

from apps.chat.models import Conversation, Message, Role, Status
from apps.chat.tests.factories import run_stream
from apps.documents import ocr
from apps.documents.models import Answer, Chunk, Document, MemberRole, WorkspaceMember
from apps.documents.storage import documents_storage, storage_name
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import Actor

# The viewer's and OCR's render caps (checked with literals: a page image must stay bounded).
VIEWER_MAX_PIXELS = 16_000_000
OCR_MAX_PIXELS = 40_000_000


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _big_page_pdf(side_points: int, *, text: str = "Large page text") -> bytes:
    """One square page of ``side_points`` PDF points (a legal MediaBox; pdfium does not clamp it)."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(side_points, side_points))
    pdf.add_page()
    if text:
        pdf.set_font("helvetica", size=24)
        pdf.text(50, 80, text)
    return bytes(pdf.output())


# --- Answers belong to the person who asked ---------------------------------------------


@pytest.fixture
def answer_of_a(staff_a: Actor, shared_workspace: Any) -> Answer:
    """Staff A's answer in the shared workspace (rows only: no pipeline, no model)."""
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        conversation = Conversation.objects.create(
            owner=staff_a.user, alias_name="rag-model", level=1, title="人事評価の質問"
        )
        question = "山田さんの懲戒の扱いは？"
        Message.objects.create(
            conversation=conversation, role=Role.USER, content=question, status=Status.COMPLETE
        )
        message = Message.objects.create(
            conversation=conversation, role=Role.ASSISTANT, content="懲戒の回答本文", status=Status.COMPLETE
        )
        answer: Answer = Answer.objects.create(
            workspace=shared_workspace,
            asked_by=staff_a.user,
            conversation=conversation,
            message=message,
            question=question,
            sources=[],
        )
        return answer


@pytest.mark.parametrize("role", [MemberRole.VIEWER, MemberRole.EDITOR])
def test_another_member_cannot_read_or_stream_someone_elses_answer(
    role: str, staff_a: Actor, colleague_a: Any, shared_workspace: Any, answer_of_a: Answer
) -> None:
    """A question and its answer are the asker's conversation (DESIGN §1: staff see only their own)."""
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        WorkspaceMember.objects.create(workspace=shared_workspace, user=colleague_a, role=role)
    member = _client(colleague_a)
    assert member.get(f"/documents/workspaces/{shared_workspace.pk}/").status_code == 200  # a member
    page = member.get(f"/documents/answers/{answer_of_a.pk}/")
    assert page.status_code == 404
    assert "懲戒" not in page.content.decode()
    assert run_stream(colleague_a, f"/documents/answers/{answer_of_a.pk}/stream").status_code == 404
    # The asker still sees it.
    mine = _client(staff_a.user).get(f"/documents/answers/{answer_of_a.pk}/")
    assert mine.status_code == 200 and "懲戒の回答本文" in mine.content.decode()


def test_an_unclaimed_answer_cannot_be_claimed_by_another_member(
    staff_a: Actor, colleague_a: Any, shared_workspace: Any, answer_of_a: Answer
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        WorkspaceMember.objects.create(workspace=shared_workspace, user=colleague_a, role=MemberRole.VIEWER)
        Message.objects.filter(pk=answer_of_a.message_id).update(status=Status.STREAMING, content="")
    assert run_stream(colleague_a, f"/documents/answers/{answer_of_a.pk}/stream").status_code == 404
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        message = Message.objects.get(pk=answer_of_a.message_id)
    assert message.status == Status.STREAMING and message.stream_started_at is None


# --- Page images are bounded whatever page size the PDF declares ---------------------------


def _pdf_document_with_chunk(staff_a: Actor, workspace: Any, data: bytes) -> tuple[Document, Chunk]:
    sha256 = hashlib.sha256(data).hexdigest()
    name = documents_storage().save(
        storage_name(ministry_id=staff_a.ministry.pk, workspace_id=workspace.pk, sha256=sha256),
        ContentFile(data),
    )
    document = Document.objects.create(
        workspace=workspace,
        filename="big.pdf",
        file_type="pdf",
        size=len(data),
        sha256=sha256,
        storage_name=name,
        uploaded_by=staff_a.user,
        status="ready",
        page_count=1,
    )
    chunk = Chunk.objects.create(
        document=document,
        workspace=workspace,
        ordinal=0,
        text="Large page text",
        page_start=1,
        page_end=1,
        char_start=0,
        char_end=15,
        token_count=3,
        boxes={"1": [[50.0, 2900.0, 250.0, 2930.0]]},
    )
    return document, chunk


def test_a_huge_pdf_page_is_rendered_at_a_bounded_size(
    staff_a: Actor, shared_workspace: Any, settings: Any
) -> None:
    """A 3000-point page at the viewer's 1.5× would be 4500×4500 px (20 M); a 14400-point one 466 M."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        document, chunk = _pdf_document_with_chunk(staff_a, shared_workspace, _big_page_pdf(3000))
    response = _client(staff_a.user).get(f"/documents/documents/{document.pk}/passage/{chunk.pk}/page/1.png")
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    assert image.width * image.height <= VIEWER_MAX_PIXELS
    assert image.width >= 1000  # scaled down, still legible
    # The highlight follows the scale actually used: its box is near the top-left third of the width.
    rgb = image.convert("RGB")
    scale = image.width / 3000
    x, y = int(150 * scale), int((3000 - 2915) * scale)
    r, g, b = rgb.getpixel((x, y))  # type: ignore[misc]
    assert (r, g, b) != (255, 255, 255) and b < 200  # yellow-tinted, not white page


def test_a_normal_page_keeps_the_viewer_scale() -> None:
    from apps.documents.answer_views import render_page_png

    png = render_page_png(data=_big_page_pdf(600), page_number=1, boxes=[])
    image = Image.open(io.BytesIO(png))
    assert (image.width, image.height) == (900, 900)


def test_ocr_renders_a_huge_page_at_a_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """OCR renders at 300 dpi: a 3000-point page would be 12500×12500 px (156 M) for Tesseract."""
    seen: dict[str, Any] = {}

    def fake_run(argv: list[str], *, input: bytes, **_kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        seen["argv"] = argv
        seen["size"] = Image.open(io.BytesIO(input)).size
        columns = "level page_num block_num par_num line_num word_num left top width height conf text"
        header = columns.replace(" ", "\t") + "\n"
        # One word at pixel (100, 100), 200 px wide and 50 px high.
        row = "5\t1\t1\t1\t1\t1\t100\t100\t200\t50\t95\tWord\n"
        return subprocess.CompletedProcess(argv, 0, stdout=(header + row).encode(), stderr=b"")

    monkeypatch.setattr("apps.documents.ocr.subprocess.run", fake_run)
    page = ocr.ocr_pdf_page(_big_page_pdf(3000, text=""), page_number=1)
    width, height = seen["size"]
    assert width * height <= OCR_MAX_PIXELS
    dpi = int(seen["argv"][seen["argv"].index("--dpi") + 1])
    assert dpi < ocr.OCR_DPI
    # Boxes are converted with the dpi actually rendered: pixel 100 is 100 × 72 / dpi points.
    assert page.text == "Word"
    assert page.boxes[0] is not None
    assert page.boxes[0][0] == pytest.approx(100 * 72 / dpi, abs=0.2)


# --- A document deleted after the question was asked is never sent to the model ----------


@pytest.mark.parametrize("mode", ["chunks", "whole"])
def test_a_document_deleted_before_the_stream_starts_is_not_sent(
    mode: str, staff_a: Actor, shared_workspace: Any, answer_of_a: Answer
) -> None:
    """Deleting marks the document ``deleting`` and takes it out of search at once; the purge comes later.

    Between the two, the answer's prompt (built when the stream starts) must not
    carry its text either.
    """
    from apps.documents.answers import build_prompt
    from apps.documents.services import document_delete

    secret = "廃棄予定の人事記録"
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        data = secret.encode()
        document = Document.objects.create(
            workspace=shared_workspace,
            filename="人事.txt",
            file_type="text",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            storage_name="x",
            uploaded_by=staff_a.user,
            status="ready",
            text=secret,
        )
        chunk = Chunk.objects.create(
            document=document,
            workspace=shared_workspace,
            ordinal=0,
            text=secret,
            char_start=0,
            char_end=len(secret),
            token_count=len(secret),
        )
        source = {
            "n": 1,
            "chunk_id": chunk.pk,
            "document_id": document.pk,
            "filename": "人事.txt",
            "page_start": 0,
            "page_end": 0,
        }
        Answer.objects.filter(pk=answer_of_a.pk).update(mode=mode, sources=[source])
        answer = Answer.objects.get(pk=answer_of_a.pk)
        assert secret in build_prompt(answer=answer)[1]["content"]  # sent while the document exists
        document.workspace = shared_workspace  # as the selector returns it (owner's role annotated)
        document_delete(actor=staff_a.user, document=document)  # marked; purge not run (no eager Celery)
        assert Document.objects.get(pk=document.pk).status == "deleting"
        assert secret not in build_prompt(answer=answer)[1]["content"]


# --- Uploading again a file that is being deleted ------------------------------------------


def test_uploading_a_file_again_while_it_is_being_deleted_is_refused_with_a_reason(
    staff_a: Actor, shared_workspace: Any
) -> None:
    """The deleting copy used to come back as "already uploaded", then vanished with the purge."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.documents.services import document_delete, document_upload

    data = "出張旅費の精算は一か月以内に行う。".encode()
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        (first,) = document_upload(
            actor=staff_a.user, workspace=shared_workspace, files=[SimpleUploadedFile("a.txt", data)]
        )
        assert first.ok and first.document is not None
        document = first.document
        document.workspace = shared_workspace
        document_delete(actor=staff_a.user, document=document)  # purge not run (no eager Celery)
        (again,) = document_upload(
            actor=staff_a.user, workspace=shared_workspace, files=[SimpleUploadedFile("a.txt", data)]
        )
    assert not again.ok and again.error_code == "being_deleted"
    assert again.error("ja") and again.error("en")


# --- Roles: found sound, kept as regression tests ------------------------------------------


def test_roles_cannot_be_escalated_and_the_owner_cannot_be_removed(
    staff_a: Actor, staff_b: Actor, colleague_a: Any, shared_workspace: Any
) -> None:
    from django.urls import reverse

    from .factories import ready_document_of_staff_a

    members_url = reverse("documents:members", args=[shared_workspace.pk])
    owner = _client(staff_a.user)
    assert owner.post(members_url, {"username": "colleague-a", "role": "editor"}).status_code == 302
    editor = _client(colleague_a)
    # An editor manages nobody, not even themself: no promotion to owner, no removal of the owner.
    assert editor.post(members_url, {"username": "colleague-a", "role": "owner"}).status_code == 403
    assert editor.post(members_url, {"username": "colleague-a", "role": "editor"}).status_code == 403
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        owner_row = WorkspaceMember.objects.get(workspace=shared_workspace, user=staff_a.user)
        editor_row = WorkspaceMember.objects.get(workspace=shared_workspace, user=colleague_a)
    assert editor.post(members_url, {"remove": owner_row.pk}).status_code == 403
    # The owner cannot hand out "owner", change or remove their own row, or add unknown / foreign users.
    for data in (
        {"username": "colleague-a", "role": "owner"},
        {"username": "staff-a", "role": "viewer"},
        {"remove": owner_row.pk},
        {"username": "no-such-user", "role": "viewer"},
        {"username": "staff-b", "role": "viewer"},
        {"remove": "not-a-number"},
    ):
        refused = owner.post(members_url, data)
        assert refused.status_code == 422, data

    # Unknown and foreign users get the same answer (nothing to learn about other ministries).
    def alerts(data: dict[str, str]) -> list[str]:
        page = owner.post(members_url, data).content.decode()
        return re.findall(r'role="alert">([^<]*)<', page)

    assert alerts({"username": "no-such-user", "role": "viewer"}) == alerts(
        {"username": "staff-b", "role": "viewer"}
    )
    assert alerts({"username": "staff-b", "role": "viewer"})
    # A member row of another workspace cannot be removed through this one.
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        other = ready_document_of_staff_a(staff_a.ministry).workspace
        other_row = WorkspaceMember.objects.get(workspace=other, user=staff_a.user)
    assert owner.post(members_url, {"remove": other_row.pk}).status_code == 422
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        roles = dict(
            WorkspaceMember.objects.filter(workspace=shared_workspace).values_list("user__username", "role")
        )
        assert WorkspaceMember.objects.filter(pk=other_row.pk).exists()
    assert roles == {"staff-a": MemberRole.OWNER, "colleague-a": MemberRole.EDITOR}
    assert editor_row.role == MemberRole.EDITOR


def test_a_viewer_cannot_delete_a_document(staff_a: Actor, colleague_a: Any) -> None:
    from django.urls import reverse

    from .factories import ready_document_of_staff_a

    with ministry_scope(ministry_id=staff_a.ministry.pk):
        document = ready_document_of_staff_a(staff_a.ministry)
        WorkspaceMember.objects.create(workspace=document.workspace, user=colleague_a, role=MemberRole.VIEWER)
    viewer = _client(colleague_a)
    assert viewer.post(reverse("documents:delete", args=[document.pk])).status_code == 403
    download = viewer.get(reverse("documents:download", args=[document.pk]))
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment")
    assert download["X-Content-Type-Options"] == "nosniff"
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        assert Document.objects.get(pk=document.pk).status == "ready"


# --- Two uploads of the same file at once leave one stored copy -----------------------------


def test_the_loser_of_a_simultaneous_upload_leaves_no_stored_copy_behind(
    staff_a: Actor, shared_workspace: Any, monkeypatch: pytest.MonkeyPatch, media_root: Any
) -> None:
    """Both see "not stored yet"; the second save gets another name; its row loses on the unique constraint.

    That second copy belonged to no document, so neither the document's nor the
    workspace's deletion would ever remove it.
    """
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.documents import services

    data = "同時にアップロードされた文書".encode()
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        (first,) = services.document_upload(
            actor=staff_a.user, workspace=shared_workspace, files=[SimpleUploadedFile("a.txt", data)]
        )
        assert first.ok

        class Racing:
            """The second request's view of the world: it looked before the first one committed."""

            class objects:  # stands in for Document.objects
                looked = False

                @classmethod
                def filter(cls, **kwargs: Any) -> Any:
                    if not cls.looked:
                        cls.looked = True
                        return Document.objects.none()
                    return Document.objects.filter(**kwargs)

                @staticmethod
                def create(**kwargs: Any) -> Document:
                    created: Document = Document.objects.create(**kwargs)
                    return created

        real = documents_storage()

        class NotYetStored:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def exists(self, name: str) -> bool:
                return False

        monkeypatch.setattr(services, "Document", Racing)
        monkeypatch.setattr(services, "documents_storage", NotYetStored)
        (second,) = services.document_upload(
            actor=staff_a.user, workspace=shared_workspace, files=[SimpleUploadedFile("a.txt", data)]
        )
    assert second.ok and second.duplicate and second.document is not None
    assert second.document.pk == first.document.pk  # type: ignore[union-attr]
    stored = [p for p in media_root.rglob("*") if p.is_file()]
    assert len(stored) == 1, stored


# --- Type detection stays linear in the file's size -------------------------------------------


def test_markdown_hint_never_looks_past_the_end_of_a_line() -> None:
    """The Markdown hint runs in the upload request on the first 20,000 characters of every text file.

    With ``\\s*`` (which also matches line breaks) under ``MULTILINE``, every line
    start rescanned all the blank lines after it: a file of 20,000 line breaks
    cost ≈4.5 s of CPU in ``detect_type``, times 20 files per upload. A hint
    that never crosses a line break does one pass.
    """
    from apps.documents.detect import _MD_HINT, FileType, detect_type

    blank_lines_then_list = "\n\n \n\u3000\n- 項目\n"
    matches = [m.group(0) for m in _MD_HINT.finditer(blank_lines_then_list)]
    assert matches and all("\n" not in m.rstrip("\n") for m in matches), matches
    # Still Markdown: indented (also with a full-width space) lists and numbered items.
    assert detect_type("前書き\n\u3000- 項目\n".encode()) == FileType.MARKDOWN
    assert detect_type("前書き\n  1. 項目\n".encode()) == FileType.MARKDOWN
    assert detect_type(b"\n" * 20_000 + b"x") == FileType.TEXT


# --- An upload racing the workspace's deletion ----------------------------------------------


def test_an_upload_that_races_the_workspace_deletion_stores_nothing(
    staff_a: Actor, shared_workspace: Any, media_root: Any
) -> None:
    """The upload view fetched the workspace; the owner's deletion committed before the files were stored.

    The documents would be created in a workspace marked ``deleting`` (reported
    as uploaded, then purged, or a 500 once the purge had removed the workspace).
    """
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.documents.services import document_upload, workspace_delete

    with ministry_scope(ministry_id=staff_a.ministry.pk):
        workspace_delete(actor=staff_a.user, workspace=shared_workspace)  # purge not run (no eager Celery)
        (result,) = document_upload(
            actor=staff_a.user,
            workspace=shared_workspace,  # the stale object the view had fetched
            files=[SimpleUploadedFile("late.txt", "削除と同時のアップロード".encode())],
        )
        assert not result.ok and result.error_code == "workspace_deleted"
        assert result.error("ja") and result.error("en")
        assert not Document.objects.filter(workspace=shared_workspace).exists()
    assert not [p for p in media_root.rglob("*") if p.is_file()]
