"""The hourly sweep deletes expired sessions and the token records of sessions that are gone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.accounts.models import OIDCSession, Session, User
from apps.accounts.services import oidc_session_record, sessions_sweep
from apps.accounts.session_store import SessionStore
from apps.accounts.tasks import sessions_sweep_task

pytestmark = pytest.mark.django_db


def _session(*, expires_in: timedelta) -> str:
    store = SessionStore()
    store["k"] = "v"
    store.set_expiry(int(expires_in.total_seconds()))
    store.create()
    assert store.session_key is not None
    return store.session_key


def test_expired_sessions_and_orphaned_token_records_are_swept() -> None:
    user = User.objects.create(username="sweep-user", subject="sub-sweep-user")
    live = _session(expires_in=timedelta(hours=1))
    expired = _session(expires_in=timedelta(hours=1))
    Session.objects.filter(session_key=expired).update(expire_date=timezone.now() - timedelta(seconds=1))
    for key, sid in ((live, "sid-live"), (expired, "sid-expired"), ("gone" * 8, "sid-gone")):
        oidc_session_record(user=user, sid=sid, session_key=key, refresh_token="rt-" + sid)

    assert sessions_sweep() == (1, 2)

    assert SessionStore(session_key=live).exists(live)
    assert not SessionStore(session_key=expired).exists(expired)
    assert list(OIDCSession.objects.values_list("sid", flat=True)) == ["sid-live"]
    assert OIDCSession.objects.get().refresh_token == "rt-sid-live"
    assert sessions_sweep() == (0, 0)  # nothing left to do


def test_the_sweep_is_scheduled_hourly() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["accounts-sessions"]
    assert entry["task"] == sessions_sweep_task.name == "accounts.sessions_sweep"
    assert entry["schedule"] <= 3600
