"""Every tenant-owned endpoint: the owner's ministry gets 200, another ministry 404."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.aiapps.tests.factories import (
    app_edit_url_of_staff_a,
    app_export_url_of_staff_a,
    run_url_of_staff_a,
    shared_app_url_of_staff_a,
)
from apps.chat.tests.factories import (
    conversation_url_of_staff_a,
    delete_confirm_url_of_staff_a,
    message_url_of_staff_a,
)
from apps.console.models import Announcement
from apps.documents.tests.factories import (
    document_delete_url_of_staff_a,
    document_download_url_of_staff_a,
    document_status_url_of_staff_a,
    workspace_url_of_staff_a,
)
from apps.tenancy.scope import ministry_scope


def _without_csrf(html: bytes) -> bytes:
    """CSRF tokens are masked differently on every response; ignore them."""
    return re.sub(rb'(X-CSRFToken": "|name="csrfmiddlewaretoken" value=")[^"]+', rb"\1", html)


# (name, factory creating A's object and returning its URL)
ENDPOINTS: list[tuple[str, Callable[[Any], str]]] = [
    (
        "announcement_detail",
        lambda a: Announcement.objects.create(ministry=a, title="A の連絡", body="本文").get_absolute_url(),
    ),
    ("chat_conversation", conversation_url_of_staff_a),
    ("chat_message", message_url_of_staff_a),
    ("chat_delete_confirm", delete_confirm_url_of_staff_a),
    ("documents_workspace", workspace_url_of_staff_a),
    ("documents_status", document_status_url_of_staff_a),
    ("documents_download", document_download_url_of_staff_a),
    ("documents_delete_confirm", document_delete_url_of_staff_a),
    ("aiapps_shared_app", shared_app_url_of_staff_a),
    ("aiapps_edit", app_edit_url_of_staff_a),
    ("aiapps_export", app_export_url_of_staff_a),
    ("aiapps_run", run_url_of_staff_a),
]


@pytest.mark.parametrize(("name", "factory"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_other_ministry_gets_404(
    name: str, factory: Callable[[Any], str], staff_a: Any, staff_b: Any
) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        url = factory(staff_a.ministry)
    owner, outsider = Client(), Client()
    owner.force_login(staff_a.user)
    outsider.force_login(staff_b.user)
    assert owner.get(url).status_code == 200
    assert outsider.get(url).status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_missing_and_foreign_look_the_same(staff_a: Any, staff_b: Any) -> None:
    with ministry_scope(ministry_id=staff_a.ministry.pk):
        url = Announcement.objects.create(ministry=staff_a.ministry, title="t", body="b").get_absolute_url()
    outsider = Client()
    outsider.force_login(staff_b.user)
    foreign = outsider.get(url)
    missing = outsider.get("/console/announcements/999999999/")
    assert foreign.status_code == missing.status_code == 404
    # Same page apart from the path itself (echoed in the language switch's "next").
    assert _without_csrf(foreign.content).replace(url.encode(), b"PATH") == _without_csrf(
        missing.content
    ).replace(b"/console/announcements/999999999/", b"PATH")
