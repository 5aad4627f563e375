"""Attacks on the production configuration (security review).

Settings are read once per process, so production settings are loaded in a
child process with a bare environment (helpers of ``tests/test_settings.py``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tests.test_settings import PROD_ENV, run_python

DUMP = """
import json
from django.conf import global_settings as g
from gennai.settings import prod as s
print(json.dumps({
    "issuer": s.OIDC_ISSUER,
    "jwks": s.OIDC_OP_JWKS_ENDPOINT,
    "readyz_details": s.GENNAI_READYZ_DETAILS,
    "language_secure": s.LANGUAGE_COOKIE_SECURE,
    "language_httponly": s.LANGUAGE_COOKIE_HTTPONLY,
    "language_samesite": s.LANGUAGE_COOKIE_SAMESITE,
    "cookies": [s.SESSION_COOKIE_NAME, s.CSRF_COOKIE_NAME],
    "fallbacks": s.SECRET_KEY_FALLBACKS,
    "email": [s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_USE_TLS,
              s.EMAIL_TIMEOUT, s.DEFAULT_FROM_EMAIL],
    "scope": [
        getattr(s, name, getattr(g, name))
        for name in ("SESSION_COOKIE_DOMAIN", "CSRF_COOKIE_DOMAIN", "SESSION_COOKIE_PATH", "CSRF_COOKIE_PATH")
    ],
}))
"""


def _prod(**env: str) -> Any:
    return run_python(["-c", DUMP], **{**PROD_ENV, **env})


@pytest.mark.parametrize(
    "issuer",
    [
        "http://sso.example.go.jp/realms/gennai",
        "HTTP://sso.example.go.jp/realms/gennai",
        "sso.example.go.jp/realms/gennai",
        "https:///realms/gennai",
    ],
)
def test_production_refuses_an_issuer_that_is_not_https(issuer: str) -> None:
    """The JWKS and the token endpoint derive from the issuer: over plain HTTP anyone on the
    path could substitute the signing keys and sign an ID token that makes them admin of any
    ministry, and would read the client secret sent with every code exchange."""
    result = _prod(OIDC_ISSUER=issuer)
    assert result.returncode != 0, result.stdout
    assert "OIDC_ISSUER" in result.stderr and "https://" in result.stderr


def test_production_accepts_an_https_issuer() -> None:
    result = _prod()
    assert result.returncode == 0, result.stderr
    dumped = json.loads(result.stdout.strip().splitlines()[-1])
    assert dumped["jwks"].startswith("https://sso.example.go.jp/realms/gennai/")


def test_production_readyz_shows_no_details_and_the_language_cookie_is_https_only() -> None:
    result = _prod()
    assert result.returncode == 0, result.stderr
    dumped = json.loads(result.stdout.strip().splitlines()[-1])
    assert dumped["readyz_details"] is False
    assert dumped["language_secure"] is True and dumped["language_httponly"] is True
    assert dumped["language_samesite"] == "Lax"
    on = _prod(GENNAI_READYZ_DETAILS="1")
    assert json.loads(on.stdout.strip().splitlines()[-1])["readyz_details"] is True


@pytest.mark.parametrize(
    "key",
    [
        "dev-insecure-gennai-secret-key-change-me",  # base.py's public development default
        "django-insecure-" + "q" * 50,  # startproject's marker
        "short-but-set",
        "ab" * 40,  # long, but two distinct characters
    ],
)
def test_production_refuses_a_public_or_weak_secret_key(key: str) -> None:
    """The key signs the messages cookie and keys every HMAC Django derives from it: the
    development default is in the repository, so anyone could sign for a deployment using it."""
    result = _prod(GENNAI_SECRET_KEY=key)
    assert result.returncode != 0, result.stdout
    assert "GENNAI_SECRET_KEY" in result.stderr and key not in result.stderr


OLD_KEY = "r7W2-the-previous-production-key-also-long-and-varied-0123456789"


def test_production_reads_the_previous_keys_for_rotation() -> None:
    """GENNAI_SECRET_KEY_FALLBACKS (comma-separated) becomes SECRET_KEY_FALLBACKS: sessions and
    encrypted OIDC tokens made under the previous key stay valid through a rotation."""
    result = _prod(GENNAI_SECRET_KEY_FALLBACKS=f" {OLD_KEY} , ")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["fallbacks"] == [OLD_KEY]
    assert json.loads(_prod().stdout.strip().splitlines()[-1])["fallbacks"] == []


def test_production_sends_alert_mail_through_the_configured_server() -> None:
    """Budget and platform alerts go out by e-mail (docs/admin.md): production must be able to name
    its mail server from the environment, not only by editing settings."""
    result = _prod(
        GENNAI_EMAIL_HOST="smtp.example.go.jp",
        GENNAI_EMAIL_PORT="587",
        GENNAI_EMAIL_HOST_USER="gennai",
        GENNAI_EMAIL_USE_TLS="1",
        GENNAI_DEFAULT_FROM_EMAIL="gennai@example.go.jp",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["email"] == [
        "django.core.mail.backends.smtp.EmailBackend",
        "smtp.example.go.jp",
        587,
        "gennai",
        True,
        10,
        "gennai@example.go.jp",
    ]


@pytest.mark.parametrize("weak", ["dev-insecure-gennai-secret-key-change-me", "short-old-key"])
def test_production_refuses_a_public_or_weak_fallback_key(weak: str) -> None:
    """A fallback verifies signatures as the key does: the public development key among them
    would let anyone sign a session cookie."""
    result = _prod(GENNAI_SECRET_KEY_FALLBACKS=f"{OLD_KEY},{weak}")
    assert result.returncode != 0, result.stdout
    assert "GENNAI_SECRET_KEY_FALLBACKS" in result.stderr and weak not in result.stderr


@pytest.mark.django_db
def test_readyz_without_details_tells_anonymous_callers_nothing_internal(settings: Any) -> None:
    """Versions (pgvector), backends, deployment counts and exception class names are for
    operators, not for anyone on the network: the probes read only the status code."""
    settings.GENNAI_READYZ_DETAILS = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"] == {"ok": False}
    assert body["checks"]["database"] == {"ok": True}
    text = response.content.decode()
    for leak in ("pgvector", "postgres", "ConnectionError", "deployments", "registered", "ms"):
        assert leak not in text, leak


@pytest.mark.django_db
def test_readyz_with_details_keeps_them_for_operators(settings: Any) -> None:
    settings.GENNAI_READYZ_DETAILS = True
    checks = Client().get("/readyz").json()["checks"]
    assert "ms" in checks["database"] and "detail" in checks["search"]


def test_production_cookies_cannot_be_tossed_from_a_sibling_subdomain() -> None:
    """Other services under the same registrable domain (another vendor's *.example.go.jp)
    could set a session or CSRF cookie for ours; ``__Host-`` cookies can only be set by this
    exact host, over HTTPS, for path /."""
    dumped = json.loads(_prod().stdout.strip().splitlines()[-1])
    assert all(name.startswith("__Host-") for name in dumped["cookies"]), dumped["cookies"]
    assert dumped["scope"] == [None, None, "/", "/"]
