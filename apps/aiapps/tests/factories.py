"""Rows for the isolation sweep (tests/test_tenancy_sweep.py) and the app tests."""

from __future__ import annotations

from typing import Any

from apps.aiapps.models import AppFavourite, AppRun, MinistryApp
from apps.tenancy.scope import ministry_scope

SIMPLE = {
    "name_ja": "挨拶文",
    "prompt_template": "{{name}}さんへの挨拶を書いてください。",
    "fields": [{"name": "name", "label": "名前", "kind": "text", "options": [], "required": True}],
}


def _owner() -> Any:
    from apps.accounts.models import User

    return User.objects.get_or_create(username="sweep-owner", defaults={"subject": "sub-sweep-owner"})[0]


def sweep_ministry_app(ministry: Any) -> MinistryApp:
    """An unsaved private app of ``ministry``."""
    return MinistryApp(ministry=ministry, owner=_owner(), **SIMPLE)


def _saved_app(ministry: Any) -> MinistryApp:
    app = sweep_ministry_app(ministry)
    with ministry_scope(ministry_id=ministry.pk):
        app.save()
    return app


def sweep_app_run(ministry: Any) -> AppRun:
    """An unsaved run of ``ministry`` (its app, conversation and message saved in its scope)."""
    from apps.chat.tests.factories import sweep_message

    app = _saved_app(ministry)
    message = sweep_message(ministry)
    with ministry_scope(ministry_id=ministry.pk):
        message.save()
    return AppRun(
        ministry=ministry,
        ministry_app=app,
        app_name=app.name_ja,
        user=_owner(),
        inputs={"name": "A only"},
        alias_name="sweep-alias",
        conversation_id=message.conversation_id,
        message=message,
    )


def sweep_app_favourite(ministry: Any) -> AppFavourite:
    return AppFavourite(ministry=ministry, user=_owner(), ministry_app=_saved_app(ministry))


# --- URLs for the cross-app endpoint sweep (tests/test_tenant_endpoints.py) ---------


def _staff_a_app(ministry: Any, **extra: Any) -> MinistryApp:
    from apps.accounts.models import User

    owner = User.objects.get(username="staff-a")
    return MinistryApp.objects.create(ministry=ministry, owner=owner, **{**SIMPLE, **extra})


def shared_app_url_of_staff_a(ministry: Any) -> str:
    from django.urls import reverse

    return reverse("aiapps:app", args=[_staff_a_app(ministry, visibility="ministry").ref])


def app_edit_url_of_staff_a(ministry: Any) -> str:
    from django.urls import reverse

    return reverse("aiapps:app_edit", args=[_staff_a_app(ministry).pk])


def app_export_url_of_staff_a(ministry: Any) -> str:
    from django.urls import reverse

    return reverse("aiapps:app_export", args=[_staff_a_app(ministry).ref])


def run_url_of_staff_a(ministry: Any) -> str:
    from apps.accounts.models import User
    from apps.chat.models import Role, Status
    from apps.chat.tests.factories import make_conversation, make_message

    owner = User.objects.get(username="staff-a")
    conversation = make_conversation(owner, ministry)
    message = make_message(conversation, role=Role.ASSISTANT, content="出力", status=Status.COMPLETE)
    run = AppRun.objects.create(
        ministry=ministry,
        ministry_app=_staff_a_app(ministry),
        app_name="挨拶文",
        user=owner,
        inputs={"name": "A"},
        alias_name="test-chat",
        conversation=conversation,
        message=message,
    )
    return run.get_absolute_url()
