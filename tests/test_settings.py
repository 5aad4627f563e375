"""Which settings a process gets, and what production insists on.

``manage.py``, ``gennai/asgi.py``, ``gennai/wsgi.py`` and ``gennai/celery.py``
default to ``gennai.settings.prod``: a process started without
``DJANGO_SETTINGS_MODULE`` must refuse to run without its secrets rather than
come up with development defaults. These run in child processes with a bare
environment, because settings are read once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = (
    "GENNAI_SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "OIDC_ISSUER",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
)
PROD_ENV = {
    "GENNAI_SECRET_KEY": "k3Q9-not-a-real-secret-but-long-and-varied-enough-for-check-deploy-0123456789",
    "DATABASE_URL": "postgresql://gennai:pw@db.example.go.jp:5432/gennai",
    "REDIS_URL": "redis://cache.example.go.jp:6379/0",
    "OIDC_ISSUER": "https://sso.example.go.jp/realms/gennai",
    "OIDC_CLIENT_ID": "gennai-web",
    "OIDC_CLIENT_SECRET": "client-secret",
    "GENNAI_ALLOWED_HOSTS": "gennai.example.go.jp",
}


def run_python(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run Python in the repository with a bare environment (no DJANGO_SETTINGS_MODULE) plus ``env``."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


DUMP_PROD = """
import json
from csp.utils import build_policy
from gennai.settings import prod as s
print(json.dumps({
    "ssl_redirect": s.SECURE_SSL_REDIRECT,
    "redirect_exempt": s.SECURE_REDIRECT_EXEMPT,
    "proxy_header": getattr(s, "SECURE_PROXY_SSL_HEADER", None),
    "hsts": s.SECURE_HSTS_SECONDS,
    "session_secure": s.SESSION_COOKIE_SECURE,
    "csrf_secure": s.CSRF_COOKIE_SECURE,
    "debug": s.DEBUG,
    "unscoped": s.GENNAI_UNSCOPED_ALLOWLIST,
    "csp": build_policy(config=s.CONTENT_SECURITY_POLICY["DIRECTIVES"]),
}))
"""


def dump_prod(**env: str) -> dict[str, Any]:
    result = run_python(["-c", DUMP_PROD], **{**PROD_ENV, **env})
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_manage_py_without_settings_runs_production_and_refuses_without_secrets() -> None:
    result = run_python(["manage.py", "check"])
    assert result.returncode != 0
    assert "GENNAI_SECRET_KEY is not set" in result.stderr
    assert "gennai.settings.prod" in result.stderr


def test_production_passes_djangos_deployment_checklist() -> None:
    """`manage.py check --deploy` with production settings (the default) and its secrets: no warnings."""
    result = run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PROD_ENV)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


ENTRY_POINTS = """
import json, os
from django.conf import settings
found = {}
import gennai.celery
found["celery"] = os.environ["DJANGO_SETTINGS_MODULE"]
import gennai.wsgi
found["wsgi"] = settings.SETTINGS_MODULE
import gennai.asgi
found["asgi"] = settings.SETTINGS_MODULE
print(json.dumps(found))
"""


def test_asgi_wsgi_and_celery_default_to_production_settings() -> None:
    result = run_python(["-c", ENTRY_POINTS], **PROD_ENV)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {
        "celery": "gennai.settings.prod",
        "wsgi": "gennai.settings.prod",
        "asgi": "gennai.settings.prod",
    }


REQUIRE_EACH = """
import importlib, json, os, sys
from django.core.exceptions import ImproperlyConfigured
full = dict(os.environ)
errors = {}
for name in sys.argv[1:]:
    os.environ.clear(); os.environ.update({k: v for k, v in full.items() if k != name})
    sys.modules.pop("gennai.settings.prod", None)
    try:
        importlib.import_module("gennai.settings.prod")
        errors[name] = None
    except ImproperlyConfigured as exc:
        errors[name] = str(exc)
print(json.dumps(errors))
"""


def test_production_refuses_to_start_without_each_required_variable() -> None:
    result = run_python(["-c", REQUIRE_EACH, *REQUIRED], **PROD_ENV)
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    for name in REQUIRED:
        assert errors[name] is not None and errors[name].startswith(f"{name} is not set"), (
            name,
            errors[name],
        )


def test_production_https_cookies_and_no_test_modules_in_the_unscoped_allowlist() -> None:
    prod = dump_prod()
    assert prod["ssl_redirect"] is True
    assert prod["hsts"] >= 31536000
    assert prod["session_secure"] and prod["csrf_secure"]
    assert prod["proxy_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert prod["debug"] is False
    # Kubernetes probes speak plain HTTP to the pod.
    assert prod["redirect_exempt"] == ["^healthz$", "^readyz$"]
    # Test settings add test modules; production must never inherit one.
    assert not [m for m in prod["unscoped"] if "test" in m.split(".") or "tests" in m.split(".")]
    assert prod["unscoped"] == []
    # Login and logout post to us and then redirect to the IdP.
    assert "form-action 'self' https://sso.example.go.jp" in prod["csp"]


def test_production_https_switches_come_from_the_environment() -> None:
    prod = dump_prod(GENNAI_SECURE_SSL_REDIRECT="0", GENNAI_BEHIND_TLS_PROXY="0", GENNAI_HSTS_SECONDS="600")
    assert prod["ssl_redirect"] is False
    assert prod["proxy_header"] is None
    assert prod["hsts"] == 600


def test_only_test_settings_allow_test_modules_unscoped(settings: Any) -> None:
    from gennai.settings import base

    assert base.GENNAI_UNSCOPED_ALLOWLIST == []
    assert settings.GENNAI_UNSCOPED_ALLOWLIST == ["apps.tenancy.tests", "tests"]


@pytest.mark.django_db
def test_pages_carry_the_content_security_policy() -> None:
    response = Client().get("/")
    assert response.status_code == 200
    policy = {d.split()[0]: d.split()[1:] for d in response.headers["Content-Security-Policy"].split("; ")}
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # a nonce appears only on pages that use one
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    issuer = os.environ.get("OIDC_ISSUER", "http://127.0.0.1:8001/realms/gennai")
    assert policy["form-action"][0] == "'self'" and issuer.startswith(policy["form-action"][1])
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in response.headers["Content-Security-Policy"]


@pytest.mark.django_db
def test_ssl_redirect_spares_the_health_probes(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    client = Client()
    response = client.get("/")
    assert response.status_code == 301 and response["Location"] == "https://testserver/"
    assert client.get("/healthz").status_code == 200
    assert client.get("/", secure=True).status_code == 200
