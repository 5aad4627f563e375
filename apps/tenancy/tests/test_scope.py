from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from apps.console.models import Announcement
from apps.tenancy.middleware import SESSION_KEY
from apps.tenancy.models import Membership
from apps.tenancy.scope import GUC_NAME, ScopeError, current_ministry_id, ministry_scope, unscoped
from apps.tenancy.tasks import TenantTask
from gennai.celery import app as celery_app
from tests.support.fixtures import make_user


def _guc() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [GUC_NAME])
        return str(cursor.fetchone()[0] or "")


def test_scope_sets_orm_and_database(ministries: Any) -> None:
    a, b = ministries
    assert current_ministry_id() is None
    with ministry_scope(ministry_id=a.pk):
        assert current_ministry_id() == a.pk
        assert _guc() == str(a.pk)
        with ministry_scope(ministry_id=b.pk):
            assert _guc() == str(b.pk)
        assert current_ministry_id() == a.pk
        assert _guc() == str(a.pk)
    assert current_ministry_id() is None


@pytest.mark.parametrize("bad", [0, -1, None, "1"])
def test_scope_rejects_invalid_ids(bad: Any) -> None:
    with pytest.raises(ScopeError), ministry_scope(ministry_id=bad):
        pass


def test_create_in_scope_defaults_and_guards_ministry(ministries: Any) -> None:
    a, b = ministries
    with ministry_scope(ministry_id=a.pk):
        obj = Announcement.objects.create(title="t", body="b")
        assert obj.ministry_id == a.pk
        with pytest.raises(ScopeError):
            Announcement.objects.create(ministry=b, title="t", body="b")


def test_unscoped_refused_outside_allowlist(settings: Any) -> None:
    settings.GENNAI_UNSCOPED_ALLOWLIST = ["apps.somewhere_else"]
    with pytest.raises(ScopeError), unscoped(reason="test"):
        pass


def test_unscoped_allowed_for_allowlisted_module_but_rls_still_applies(ministries: Any) -> None:
    a, b = ministries
    with ministry_scope(ministry_id=a.pk):
        Announcement.objects.create(title="a", body="b")
    with ministry_scope(ministry_id=b.pk):
        Announcement.objects.create(title="b", body="b")
    with unscoped(reason="prove the database layer"):
        # No GUC set: the database shows nothing even though the ORM does not filter.
        assert Announcement.objects.count() == 0


def test_middleware_scopes_request_to_membership_and_switch(ministries: Any) -> None:
    a, b = ministries
    user = make_user("both", a, ["staff"])
    Membership.objects.create(user=user, ministry=b, roles=["staff"])
    with ministry_scope(ministry_id=b.pk):
        Announcement.objects.create(title="総務省だけの連絡", body="x")
    client = Client()
    client.force_login(user)
    home = client.get("/")
    assert "総務省だけの連絡" not in home.content.decode()
    # A foreign code is ignored; the user's own code switches.
    response = client.post("/ministry/switch/", {"ministry": "nope", "next": "/"})
    assert client.session.get(SESSION_KEY) is None and response.status_code == 302
    client.post("/ministry/switch/", {"ministry": "soumu", "next": "/"})
    assert client.session[SESSION_KEY] == "soumu"
    assert "総務省だけの連絡" in client.get("/").content.decode()


def test_switch_to_ministry_without_membership_is_refused(staff_a: Any) -> None:
    client = Client()
    client.force_login(staff_a.user)
    client.post("/ministry/switch/", {"ministry": "soumu", "next": "https://evil.example/"})
    assert SESSION_KEY not in client.session


def test_tenant_task_reenters_scope(ministries: Any) -> None:
    a, _ = ministries

    @celery_app.task(base=TenantTask, name="tests.count_announcements")
    def count_announcements(*, ministry_id: int) -> tuple[int | None, int]:
        return current_ministry_id(), Announcement.objects.count()

    with ministry_scope(ministry_id=a.pk):
        Announcement.objects.create(title="t", body="b")
    assert count_announcements.apply(kwargs={"ministry_id": a.pk}).get() == (a.pk, 1)
    with pytest.raises(ScopeError):
        count_announcements.apply(kwargs={}).get()


def test_tenant_command_needs_known_ministry(ministries: Any) -> None:
    with pytest.raises(CommandError):
        call_command("announce", "--ministry", "nope", "--title", "t", "--body", "b")
    out = StringIO()
    call_command("announce", "--ministry", "digital", "--title", "件名", "--body", "本文", stdout=out)
    assert "digital" in out.getvalue()
    with ministry_scope(ministry_id=ministries[0].pk):
        assert Announcement.objects.filter(title="件名").count() == 1
    with ministry_scope(ministry_id=ministries[1].pk):
        assert Announcement.objects.filter(title="件名").count() == 0


def test_unscoped_use_is_audited(ministries: Any) -> None:
    from apps.audit.models import AuditEvent

    with unscoped(reason="audit me"):
        pass
    event = AuditEvent.objects.filter(action="tenancy.unscoped").last()
    assert event is not None and event.data == {"reason": "audit me"}
    assert event.target_id == __name__


def test_middleware_scopes_sync_views_but_leaves_async_views_to_scope_themselves(staff_a: Any) -> None:
    """Sync views run inside the scope's transaction; async views (streams, /v1) get the
    membership but no open transaction, and must enter ministry_scope per DB call."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.http import HttpResponse
    from django.test import RequestFactory

    from apps.tenancy.middleware import MinistryScopeMiddleware

    seen: dict[str, Any] = {}

    def get_response(request: Any) -> HttpResponse:
        seen["scope"] = current_ministry_id()
        seen["membership"] = request.membership
        return HttpResponse()

    middleware = MinistryScopeMiddleware(get_response)
    for path, expect_scope in (("/", True), ("/v1/models", False)):
        request = RequestFactory().get(path)
        request.user = staff_a.user
        request.session = SessionStore()
        middleware(request)
        assert seen["membership"].ministry_id == staff_a.ministry.pk
        assert seen["scope"] == (staff_a.ministry.pk if expect_scope else None), path
