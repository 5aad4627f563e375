"""Session keys are stored only as digests (apps/accounts/session_keys.py, accounts/0005).

What must hold: after a sign-in through our callback, neither the session table
nor ``accounts_oidcsession`` holds the cookie value, only its digest; the
session works across requests and logout deletes its row; a cookie equal to
the stored digest (what a backup reveals) is no session; back-channel logout
still ends the session; the session store's sync and async methods and
``clearsessions`` work; an instance loaded from the database saves and deletes
its own row (the digest is not hashed again); the data migration replaces raw
keys with digests and empties the old ``django_session`` table.
"""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import FieldError
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from apps.accounts.models import OIDCSession, Session
from apps.accounts.services import sessions_end_for_logout_token
from apps.accounts.session_keys import SessionKeyDigestField, StoredDigest, session_key_digest
from apps.accounts.session_store import SessionStore
from apps.tenancy.db import owner_mode
from tests.support.fixtures import make_user

from .test_review_attack import _sign_in

pytestmark = pytest.mark.django_db


def engine_table() -> str:
    """The table of the configured session engine (``django_session`` before the fix)."""
    model = import_module(settings.SESSION_ENGINE).SessionStore.get_model_class()
    return str(model._meta.db_table)


def raw_column(table: str, column: str) -> list[str]:
    """The column as stored, past the ORM."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table}")
        return [row[0] for row in cursor.fetchall()]


def rows_containing(value: str) -> list[tuple[str, str]]:
    """Every (table, column) of the session tables whose stored text contains ``value``."""
    found = []
    for table, column in ((engine_table(), "session_key"), ("accounts_oidcsession", "session_key")):
        found += [(table, column) for stored in raw_column(table, column) if value in stored]
    return found


def sign_in(client: Client, monkeypatch: pytest.MonkeyPatch, *, subject: str, sid: str) -> str:
    """Finish a code flow at our callback (token endpoint and signature stubbed); the cookie value."""
    _sign_in(client, monkeypatch, subject=subject, sid=sid, id_token="tok." + sid)
    return str(client.cookies[settings.SESSION_COOKIE_NAME].value)


def signed_in_as(client: Client) -> Any:
    """The user of a request of ``client``'s session, as our middleware saw it."""
    response = client.get("/")
    return response.wsgi_request.user  # type: ignore[attr-defined]


@pytest.fixture
def member(ministries: tuple[Any, Any]) -> Any:
    return make_user("digest-member", ministries[0], ["staff"])


def test_the_database_holds_only_the_digest_of_the_cookie(
    monkeypatch: pytest.MonkeyPatch, member: Any
) -> None:
    client = Client()
    cookie = sign_in(client, monkeypatch, subject=str(member.subject), sid="sid-1")
    digest = session_key_digest(cookie)
    assert len(cookie) == 32 and len(digest) == 40

    assert rows_containing(cookie) == [], "no table holds the cookie value"
    assert raw_column(engine_table(), "session_key") == [digest]
    assert raw_column("accounts_oidcsession", "session_key") == [digest]

    assert signed_in_as(client).pk == member.pk
    assert signed_in_as(client).pk == member.pk, "the session works across requests"
    assert OIDCSession.objects.get(session_key=cookie).sid == "sid-1", "lookups by the raw key hash it"

    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert raw_column(engine_table(), "session_key") == []
    assert raw_column("accounts_oidcsession", "session_key") == []
    assert not signed_in_as(client).is_authenticated


def test_a_cookie_equal_to_the_stored_digest_is_no_session(
    monkeypatch: pytest.MonkeyPatch, member: Any
) -> None:
    """What a database backup reveals cannot be replayed."""
    cookie = sign_in(Client(), monkeypatch, subject=str(member.subject), sid="sid-1")
    (stored,) = raw_column(engine_table(), "session_key")

    thief = Client()
    thief.cookies[settings.SESSION_COOKIE_NAME] = stored
    assert not signed_in_as(thief).is_authenticated
    assert SessionStore(stored).load() == {}
    assert not SessionStore().exists(stored)

    owner = Client()
    owner.cookies[settings.SESSION_COOKIE_NAME] = cookie
    assert signed_in_as(owner).pk == member.pk, "the real cookie still is the session"


def test_back_channel_logout_ends_the_session(monkeypatch: pytest.MonkeyPatch, member: Any) -> None:
    client = Client()
    cookie = sign_in(client, monkeypatch, subject=str(member.subject), sid="sid-bc")
    assert isinstance(OIDCSession.objects.get(sid="sid-bc").session_key, StoredDigest)

    assert sessions_end_for_logout_token(subject=str(member.subject), sid="sid-bc") == 1

    assert not Session.objects.filter(session_key=cookie).exists()
    assert raw_column(engine_table(), "session_key") == []
    assert not signed_in_as(client).is_authenticated


def test_session_store_sync_methods(member: Any) -> None:
    store = SessionStore()
    store["k"] = "v"
    store.save()
    key = str(store.session_key)
    assert raw_column(engine_table(), "session_key") == [session_key_digest(key)]

    assert SessionStore().exists(key)
    assert SessionStore(key).load() == {"k": "v"}
    assert SessionStore(key).get("k") == "v"

    store.cycle_key()
    new_key = str(store.session_key)
    assert new_key != key and raw_column(engine_table(), "session_key") == [session_key_digest(new_key)]

    SessionStore(new_key).delete()
    assert not SessionStore().exists(new_key)
    assert raw_column(engine_table(), "session_key") == []


def test_session_store_async_methods(member: Any) -> None:
    async def scenario() -> None:
        store = SessionStore()
        await store.aset("k", "v")
        await store.asave()
        key = str(store.session_key)
        assert await SessionStore().aexists(key)
        assert await SessionStore(key).aload() == {"k": "v"}
        assert not await SessionStore().aexists(session_key_digest(key))
        assert await SessionStore(session_key_digest(key)).aload() == {}
        await SessionStore(key).adelete()
        assert not await SessionStore().aexists(key)

    async_to_sync(scenario)()
    assert raw_column(engine_table(), "session_key") == []


def test_a_stored_digest_finds_its_row_in_the_store_sync_and_async(member: Any) -> None:
    store = SessionStore()
    store["k"] = "v"
    store.save()
    stored = Session.objects.get(session_key=store.session_key).session_key
    assert isinstance(stored, StoredDigest) and stored == session_key_digest(str(store.session_key))
    assert SessionStore().exists(stored)
    assert async_to_sync(SessionStore().aexists)(stored)
    async_to_sync(SessionStore(session_key=stored).adelete)()
    assert raw_column(engine_table(), "session_key") == []


def test_instances_loaded_from_the_database_save_and_delete_their_own_row(
    monkeypatch: pytest.MonkeyPatch, member: Any
) -> None:
    """A digest read from the database is not hashed again (save would insert a second row)."""
    sign_in(Client(), monkeypatch, subject=str(member.subject), sid="sid-1")

    session = Session.objects.get()
    later = timezone.now() + timedelta(hours=1)
    session.expire_date = later
    session.save()
    assert Session.objects.count() == 1 and Session.objects.get().expire_date == later
    session.delete()
    assert raw_column(engine_table(), "session_key") == []

    record = OIDCSession.objects.get()
    record.sid = "sid-renamed"
    record.save()
    assert list(OIDCSession.objects.values_list("sid", flat=True)) == ["sid-renamed"]
    record.delete()
    assert not OIDCSession.objects.exists()


def test_the_session_managers_save_stores_the_digest() -> None:
    key = "m" * 32
    Session.objects.save(key, {"k": "v"}, timezone.now() + timedelta(hours=1))
    assert raw_column(engine_table(), "session_key") == [session_key_digest(key)]
    assert SessionStore(key).load() == {"k": "v"}


def test_clearsessions_deletes_only_expired_sessions() -> None:
    stores = [SessionStore(), SessionStore()]
    for store in stores:
        store["k"] = "v"
        store.save()
    Session.objects.filter(session_key=stores[0].session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    call_command("clearsessions")
    assert raw_column(engine_table(), "session_key") == [session_key_digest(str(stores[1].session_key))]


def test_the_field_hashes_raw_keys_only() -> None:
    field = SessionKeyDigestField(max_length=40)
    digest = session_key_digest("k" * 32)
    assert field.get_prep_value("k" * 32) == digest
    assert field.get_prep_value(StoredDigest(digest)) == digest
    assert field.get_prep_value(digest) == session_key_digest(digest), "a plain str is always hashed"
    assert field.get_prep_value(None) is None and field.get_prep_value("") == ""
    with pytest.raises(FieldError):
        Session.objects.filter(session_key__startswith="ab").exists()


BEFORE = ("accounts", "0004_oidcsession_tokens_encrypted")
AFTER = ("accounts", "0005_session_key_digests")


def test_migration_hashes_oidc_session_keys_and_empties_the_old_session_table(member: Any) -> None:
    raw_key = "r" * 32
    already = session_key_digest("d" * 32)
    with owner_mode():
        MigrationExecutor(connection).migrate([BEFORE])
    with connection.cursor() as cursor:
        for key in (raw_key, already):
            cursor.execute(
                "INSERT INTO accounts_oidcsession (user_id, sid, session_key, refresh_token, "
                "access_token, created_at) VALUES (%s, %s, %s, '', '', now())",
                [member.pk, "sid-" + key[:4], key],
            )
        cursor.execute(
            "INSERT INTO django_session (session_key, session_data, expire_date) "
            "VALUES (%s, '', now() + interval '1 hour')",
            [raw_key],
        )

    with owner_mode():
        MigrationExecutor(connection).migrate([AFTER])
    assert sorted(raw_column("accounts_oidcsession", "session_key")) == sorted(
        [session_key_digest(raw_key), already]
    ), "raw keys hashed, digests left alone"
    assert OIDCSession.objects.get(session_key=raw_key).sid == "sid-rrrr"
    assert raw_column("django_session", "session_key") == [], "no live cookie left in the old table"

    with owner_mode():
        MigrationExecutor(connection).migrate([BEFORE])
    assert raw_column("accounts_oidcsession", "session_key") == [], "digests cannot be reversed"

    with owner_mode():
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
