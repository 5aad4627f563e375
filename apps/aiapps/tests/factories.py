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
