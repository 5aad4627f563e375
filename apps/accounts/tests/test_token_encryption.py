"""OIDC tokens are encrypted at rest (apps/accounts/token_crypto.py, accounts/0004).

What must hold: the database never holds a token or a recognisable part of one;
the ORM reads back what was written; a rotated ``SECRET_KEY`` with the old one in
``SECRET_KEY_FALLBACKS`` still reads old rows and re-encrypts them on save; a
value no key decrypts reads as "" with a warning, and the claims re-check then
ends the session without asking the IdP; the data migration encrypts existing
plain rows and its reverse decrypts them.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
from cryptography.fernet import InvalidToken
from django.core.exceptions import FieldError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client, override_settings

from apps.accounts import recheck
from apps.accounts.models import OIDCSession
from apps.accounts.recheck import ID_TOKEN_SESSION_KEY
from apps.accounts.services import oidc_session_record
from apps.accounts.token_crypto import FERNET_PREFIX, token_decrypt, token_encrypt, token_fernet
from apps.tenancy.db import owner_mode

pytestmark = pytest.mark.django_db

# Shaped like Keycloak's tokens (JWTs: base64url header, payload, signature).
REFRESH = (
    "eyJhbGciOiJIUzUxMiIsInR5cCIgOiAiSldUIiwia2lkIiA6ICJyZWZyZXNoLWtleSJ9."
    "eyJleHAiOjE4OTM0NTYwMDAsInN1YiI6InN1Yi1zdGFmZi1hIiwidHlwIjoiUmVmcmVzaCIsInNpZCI6InNpZC0xIn0."
    "c2lnbmF0dXJlLW9mLXRoZS1yZWZyZXNoLXRva2VuLW5vdC1hLXJlYWwtb25l"
)
ACCESS = (
    "eyJhbGciOiJSUzI1NiIsInR5cCIgOiAiSldUIiwia2lkIiA6ICJhY2Nlc3Mta2V5In0."
    "eyJleHAiOjE4OTM0NTYwMDAsInN1YiI6InN1Yi1zdGFmZi1hIiwiYXpwIjoiZ2VubmFpLXdlYiJ9."
    "c2lnbmF0dXJlLW9mLXRoZS1hY2Nlc3MtdG9rZW4tbm90LWEtcmVhbC1vbmU"
)
OLD_KEY = "old-secret-key-for-token-rotation-tests-0123456789abcdef"
NEW_KEY = "new-secret-key-for-token-rotation-tests-fedcba9876543210"
WINDOW = 8


def raw_tokens(pk: int) -> tuple[str, str]:
    """The columns as stored, past the ORM."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT refresh_token, access_token FROM accounts_oidcsession WHERE id = %s", [pk])
        refresh, access = cursor.fetchone()
    return refresh, access


def raw_set_tokens(pk: int, *, refresh: str, access: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_oidcsession SET refresh_token = %s, access_token = %s WHERE id = %s",
            [refresh, access, pk],
        )


def assert_holds_no_part_of(stored: str, token: str) -> None:
    assert stored.startswith(FERNET_PREFIX), stored[:12]
    for start in range(len(token) - WINDOW + 1):
        assert token[start : start + WINDOW] not in stored, f"{token[start : start + WINDOW]!r} stored"


def record_for(user: Any, *, session_key: str = "k" * 32, refresh: str = REFRESH) -> OIDCSession:
    return oidc_session_record(
        user=user, sid="sid-1", session_key=session_key, refresh_token=refresh, access_token=ACCESS
    )


def test_columns_hold_neither_token_nor_any_part_and_the_orm_reads_them_back(staff_a: Any) -> None:
    record = record_for(staff_a.user)
    refresh, access = raw_tokens(record.pk)
    assert_holds_no_part_of(refresh, REFRESH)
    assert_holds_no_part_of(access, ACCESS)
    assert "eyJ" not in refresh + access
    fresh = OIDCSession.objects.get(pk=record.pk)
    assert (fresh.refresh_token, fresh.access_token) == (REFRESH, ACCESS)

    # The re-check's rotation writes through QuerySet.update(): encrypted as well.
    rotated = REFRESH[:-8] + "ROTATED1"
    OIDCSession.objects.filter(pk=record.pk).update(refresh_token=rotated)
    assert_holds_no_part_of(raw_tokens(record.pk)[0], rotated)
    assert OIDCSession.objects.get(pk=record.pk).refresh_token == rotated


def test_same_token_twice_gives_different_ciphertexts_and_empty_stays_empty(staff_a: Any) -> None:
    first = record_for(staff_a.user, session_key="a" * 32)
    second = record_for(staff_a.user, session_key="b" * 32)
    assert raw_tokens(first.pk)[0] != raw_tokens(second.pk)[0], "random IV: equal tokens are not visible"
    empty = oidc_session_record(user=staff_a.user, sid="", session_key="c" * 32)
    assert raw_tokens(empty.pk) == ("", "")
    assert OIDCSession.objects.get(pk=empty.pk).refresh_token == ""


def test_rotation_reads_with_the_fallback_and_rewrites_with_the_new_key(staff_a: Any) -> None:
    old_only = token_fernet(secret_key=OLD_KEY, fallbacks=[])
    new_only = token_fernet(secret_key=NEW_KEY, fallbacks=[])
    with override_settings(SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        record = record_for(staff_a.user)
    stored = raw_tokens(record.pk)[0]
    assert token_decrypt(ciphertext=stored, fernet=old_only) == REFRESH
    with pytest.raises(InvalidToken):
        token_decrypt(ciphertext=stored, fernet=new_only)

    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY]):
        record = OIDCSession.objects.get(pk=record.pk)
        assert record.refresh_token == REFRESH
        record.save()
    rewritten = raw_tokens(record.pk)[0]
    assert token_decrypt(ciphertext=rewritten, fernet=new_only) == REFRESH
    with pytest.raises(InvalidToken):
        token_decrypt(ciphertext=rewritten, fernet=old_only)
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]):
        assert OIDCSession.objects.get(pk=record.pk).refresh_token == REFRESH, "old key no longer needed"


@pytest.mark.parametrize("garbage", ["rotated", "corrupted", "plain"])
def test_undecryptable_value_reads_as_empty_with_a_warning(
    staff_a: Any, caplog: pytest.LogCaptureFixture, garbage: str
) -> None:
    record = record_for(staff_a.user)
    stored = {
        "rotated": token_encrypt(plaintext=REFRESH, fernet=token_fernet(secret_key=OLD_KEY, fallbacks=[])),
        "corrupted": raw_tokens(record.pk)[0][:-4] + "AAAA",
        "plain": REFRESH,  # e.g. written by code from before the migration
    }[garbage]
    raw_set_tokens(record.pk, refresh=stored, access=raw_tokens(record.pk)[1])
    with caplog.at_level(logging.WARNING, logger="gennai.accounts"):
        fresh = OIDCSession.objects.get(pk=record.pk)
    assert fresh.refresh_token == ""
    assert fresh.access_token == ACCESS, "the other column is unaffected"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "decrypt" in r.getMessage()]
    assert len(warnings) == 1
    assert "refresh_token" in warnings[0].getMessage()
    assert REFRESH not in caplog.text and stored not in caplog.text


@pytest.mark.parametrize("readable", [True, False], ids=["current-key", "unknown-key"])
def test_claims_recheck_of_a_session_whose_tokens_do_not_decrypt_ends_it(
    staff_a: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, readable: bool
) -> None:
    """Through the real middleware: unreadable tokens end the session, the IdP is not asked.

    With readable tokens the same request sends the plain refresh token to the
    IdP (here: unreachable, so the session is kept within the stale bound).
    """
    client = Client()
    client.force_login(staff_a.user)
    session = client.session
    session[ID_TOKEN_SESSION_KEY] = "header.payload.signature"
    session.save()
    session_key = str(session.session_key)
    record = record_for(staff_a.user, session_key=session_key)
    if not readable:
        other = token_fernet(secret_key=OLD_KEY, fallbacks=[])
        raw_set_tokens(
            record.pk,
            refresh=token_encrypt(plaintext=REFRESH, fernet=other),
            access=token_encrypt(plaintext=ACCESS, fernet=other),
        )
    sent: list[dict[str, Any]] = []

    def idp_post(url: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(dict(kwargs.get("data") or {}))
        raise requests.ConnectionError("IdP down")

    def idp_get(url: str, *args: Any, **kwargs: Any) -> Any:
        raise requests.ConnectionError("IdP down")

    monkeypatch.setattr(recheck.requests, "post", idp_post)
    monkeypatch.setattr(recheck.requests, "get", idp_get)
    with caplog.at_level(logging.WARNING, logger="gennai.accounts"):
        response = client.get("/")

    if readable:
        assert response.status_code == 200
        assert [call["refresh_token"] for call in sent] == [REFRESH]
        assert OIDCSession.objects.filter(session_key=session_key).exists()
        assert "_auth_user_id" in client.session
    else:
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
        assert sent == [], "nothing (and no ciphertext) is sent to the IdP"
        assert not OIDCSession.objects.filter(session_key=session_key).exists()
        assert "_auth_user_id" not in client.session
        assert "could not be decrypted" in caplog.text


def test_only_empty_comparisons_are_allowed_on_encrypted_fields(staff_a: Any) -> None:
    record = record_for(staff_a.user)
    assert list(OIDCSession.objects.exclude(refresh_token="").values_list("pk", flat=True)) == [record.pk]
    assert not OIDCSession.objects.filter(refresh_token="").exists()
    assert not OIDCSession.objects.filter(access_token__isnull=True).exists()
    with pytest.raises(TypeError, match="only be compared with ''"):
        OIDCSession.objects.filter(refresh_token=REFRESH).exists()
    with pytest.raises(FieldError):
        OIDCSession.objects.filter(refresh_token__startswith="ey").exists()


BEFORE = ("accounts", "0003_local_role_grants")
AFTER = ("accounts", "0004_oidcsession_tokens_encrypted")


def test_migration_encrypts_plain_rows_and_its_reverse_decrypts(staff_a: Any) -> None:
    with owner_mode():
        MigrationExecutor(connection).migrate([BEFORE])
    unreadable = token_encrypt(plaintext=REFRESH, fernet=token_fernet(secret_key=OLD_KEY, fallbacks=[]))
    rows = {"plain": (REFRESH, ACCESS), "empty": ("", ""), "unreadable": (unreadable, "")}
    ids: dict[str, int] = {}
    with connection.cursor() as cursor:
        for name, (refresh, access) in rows.items():
            cursor.execute(
                "INSERT INTO accounts_oidcsession "
                "(user_id, sid, session_key, refresh_token, access_token, created_at) "
                "VALUES (%s, %s, %s, %s, %s, now()) RETURNING id",
                [staff_a.user.pk, "sid", name, refresh, access],
            )
            ids[name] = cursor.fetchone()[0]

    with owner_mode():
        MigrationExecutor(connection).migrate([AFTER])
    refresh, access = raw_tokens(ids["plain"])
    assert_holds_no_part_of(refresh, REFRESH)
    assert_holds_no_part_of(access, ACCESS)
    assert raw_tokens(ids["empty"]) == ("", "")
    assert raw_tokens(ids["unreadable"]) == (unreadable, ""), "not encrypted a second time"
    plain = OIDCSession.objects.get(pk=ids["plain"])
    assert (plain.refresh_token, plain.access_token) == (REFRESH, ACCESS)

    with owner_mode():
        MigrationExecutor(connection).migrate([BEFORE])
    assert raw_tokens(ids["plain"]) == (REFRESH, ACCESS)
    assert raw_tokens(ids["empty"]) == ("", "")
    assert raw_tokens(ids["unreadable"]) == ("", ""), "no key reads it: no token"

    with owner_mode():
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
