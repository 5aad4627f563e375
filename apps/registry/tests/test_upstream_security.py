"""Invariant 8: no user-editable field reaches a platform credential or an arbitrary host.

Every layer is tried with the references an attacker would type (form, service,
provider at call time, health probe), and every refused host is proven to get
no connection at all: a raw listening socket counts what reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import importlib
import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import translation

from apps.registry import egress, services
from apps.registry.egress import EgressPolicy, EgressRefused
from apps.registry.forms import DeploymentForm
from apps.registry.models import Deployment, HealthState
from apps.registry.providers.base import ChatRequest, ProviderTarget, UpstreamRejected, UpstreamUnavailable
from apps.registry.providers.openai_compatible import OpenAICompatibleProvider
from apps.registry.router import provider_target
from apps.registry.secrets import RESERVED_ENV_NAMES, SecretRefError, parse_secret_ref, resolve_secret_ref
from apps.registry.tests.test_services import clean_registry_state, make_deployment  # noqa: F401
from tests.support.fake_upstream import FakeUpstream

PLATFORM_SECRETS = [
    "env:DATABASE_URL",
    "env:REDIS_URL",
    "env:GENNAI_SECRET_KEY",
    "env:OIDC_CLIENT_SECRET",
    "env:KEYCLOAK_ADMIN_PASSWORD",
    "env:GENNAI_UPSTREAM",  # the prefix with an empty name
    "env:GENNAI_UPSTREAM_",
    "env:GENNAI_UPSTREAM_CONNECT_TIMEOUT",  # configuration under the prefix, not a key
    "file:../x",
    "file:/etc/passwd",
    "file:..",
    "file:.hidden",
    "file:a/b",
    "sk-live-0123456789abcdef",
]
PROD_LIKE = ["*.gpu.svc.cluster.local", "10.40.0.0/16", "api.vendor.example.jp"]


@pytest.fixture(autouse=True)
def japanese() -> Iterator[None]:
    """Messages are asserted in Japanese (the default), whatever an earlier test activated."""
    with translation.override("ja"):
        yield


class Listener:
    """A TCP socket on loopback that counts every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("DATABASE_URL", "postgres://owner:hunter2@db/gennai")
    monkeypatch.setenv("GENNAI_SECRET_KEY", "platform-signing-key")
    monkeypatch.setenv("OIDC_CLIENT_SECRET", "oidc-secret")
    monkeypatch.setenv("KEYCLOAK_ADMIN_PASSWORD", "kc-admin")
    monkeypatch.setenv("GENNAI_UPSTREAM", "prefix-only")
    monkeypatch.setenv("GENNAI_UPSTREAM_LLMJP", "vendor-key-123")
    outside = tmp_path / "outside"
    outside.write_text("not-an-upstream-key")
    secrets_dir = tmp_path / "upstream-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "llmjp-api-key").write_text("file-key-456\n")
    (secrets_dir / "escape").symlink_to(outside)
    # Kubernetes Secret volumes: name -> ..data/name, ..data -> ..<timestamp>/ (inside the dir).
    (secrets_dir / "..2026_11_30").mkdir()
    (secrets_dir / "..2026_11_30" / "vendor-key").write_text("k8s-key-789")
    (secrets_dir / "..data").symlink_to("..2026_11_30")
    (secrets_dir / "vendor-key").symlink_to("..data/vendor-key")
    return secrets_dir


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- Secret references: every layer -----------------------------------------------------------


@pytest.mark.parametrize("ref", [*PLATFORM_SECRETS, "file:escape"])
def test_resolver_refuses_everything_outside_the_namespace(
    ref: str, secrets_env: Path, settings: Any
) -> None:
    settings.GENNAI_UPSTREAM_SECRETS_DIR = str(secrets_env)
    with pytest.raises(SecretRefError) as refused:
        resolve_secret_ref(ref)
    assert "hunter2" not in refused.value.message and "sk-live" not in refused.value.message


def test_resolver_reads_the_namespace(secrets_env: Path, settings: Any) -> None:
    settings.GENNAI_UPSTREAM_SECRETS_DIR = str(secrets_env)
    assert resolve_secret_ref("env:GENNAI_UPSTREAM_LLMJP") == "vendor-key-123"
    assert resolve_secret_ref("file:llmjp-api-key") == "file-key-456"
    assert resolve_secret_ref("file:vendor-key") == "k8s-key-789"  # symlinks inside the dir are fine
    assert resolve_secret_ref("") == ""
    with pytest.raises(SecretRefError):
        resolve_secret_ref("env:GENNAI_UPSTREAM_UNSET")  # valid but missing: loud, not a silent no-key
    settings.GENNAI_UPSTREAM_SECRETS_DIR = ""
    with pytest.raises(SecretRefError):
        resolve_secret_ref("file:llmjp-api-key")


def test_every_upstream_setting_is_reserved() -> None:
    """A new GENNAI_UPSTREAM_* setting must join RESERVED_ENV_NAMES, or it becomes resolvable."""
    settings_dir = Path(__file__).resolve().parents[3] / "gennai" / "settings"
    names = set()
    for path in settings_dir.glob("*.py"):
        names |= set(re.findall(r"GENNAI_UPSTREAM_[A-Z0-9_]+", path.read_text()))
    assert names and names <= RESERVED_ENV_NAMES, names - RESERVED_ENV_NAMES


@pytest.mark.parametrize("ref", PLATFORM_SECRETS)
def test_form_refuses_and_does_not_echo(ref: str, db: None) -> None:
    deployment = make_deployment("d1")
    form = DeploymentForm(
        data={
            "model": deployment.model_id,
            "name": "d2",
            "provider": "openai_compatible",
            "base_url": "http://127.0.0.1:9",
            "served_model_name": "m",
            "secret_ref": ref,
            "zone": "on_prem",
            "clearance": "1",
            "max_concurrency": "4",
        }
    )
    assert not form.is_valid()
    assert "secret_ref" in form.errors
    assert form.data["secret_ref"] == ""  # a refused value is never rendered back


@pytest.mark.parametrize("ref", PLATFORM_SECRETS)
def test_service_refuses_on_create_and_update(ref: str, db: None) -> None:
    deployment = make_deployment("d1")
    with pytest.raises(ValidationError) as refused:
        services.deployment_save(actor=None, deployment=deployment, secret_ref=ref)
    assert "secret_ref" in refused.value.message_dict
    with pytest.raises(ValidationError):
        services.deployment_save(
            actor=None,
            model=deployment.model,
            name="d2",
            base_url="http://127.0.0.1:9",
            served_model_name="m",
            clearance=1,
            secret_ref=ref,
        )
    assert Deployment.objects.get(name="d1").secret_ref == ""
    assert not Deployment.objects.filter(name="d2").exists()


@pytest.mark.parametrize("ref", [*PLATFORM_SECRETS, "file:escape"])
def test_provider_refuses_at_call_time_and_sends_nothing(
    ref: str, db: None, secrets_env: Path, settings: Any
) -> None:
    """Defence in depth: a row written behind the service's back still reaches no credential."""
    settings.GENNAI_UPSTREAM_SECRETS_DIR = str(secrets_env)
    with FakeUpstream() as fake:
        deployment = make_deployment("d1", url=fake.url)
        Deployment.objects.filter(pk=deployment.pk).update(secret_ref=ref)  # bypasses every check
        deployment.refresh_from_db()
        provider = OpenAICompatibleProvider(provider_target(deployment))
        with pytest.raises(UpstreamUnavailable, match="secret reference refused"):
            run(provider.chat(ChatRequest(messages=[{"role": "user", "content": "x"}])).__anext__())
        with pytest.raises(UpstreamUnavailable):
            run(provider.embed(["x"]))
        assert services.deployment_health_check(deployments=[deployment]) == {deployment.pk: "down"}
        assert fake.requests == 0
    deployment.refresh_from_db()
    assert "secret reference refused" in deployment.health_detail


def test_provider_sends_a_namespaced_key(db: None, secrets_env: Path, settings: Any) -> None:
    settings.GENNAI_UPSTREAM_SECRETS_DIR = str(secrets_env)
    target = ProviderTarget(
        deployment_id=1,
        name="t",
        base_url="http://127.0.0.1:9",
        served_model_name="m",
        secret_ref="file:vendor-key",
    )

    async def prepare() -> dict[str, str]:
        client, headers = OpenAICompatibleProvider(target)._prepare()
        await client.aclose()
        return headers

    assert run(prepare()) == {"Authorization": "Bearer k8s-key-789"}


# --- Egress: URL time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]:8000",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://0.0.0.0:8000",
        "http://224.0.0.1",
        "http://[::ffff:169.254.169.254]/",
        "http://evil.example.com",
        "http://10.1.2.3:5432",
        "http://user:pass@127.0.0.1:8000",
    ],
)
def test_url_time_refusals_under_test_settings(url: str, db: None) -> None:
    deployment = make_deployment("d1")
    with pytest.raises(ValidationError) as refused:
        services.deployment_save(actor=None, deployment=deployment, base_url=url)
    assert "base_url" in refused.value.message_dict


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_loopback_is_refused_under_production_like_settings(url: str, db: None, settings: Any) -> None:
    deployment = make_deployment("d1")
    settings.GENNAI_UPSTREAM_ALLOWED_HOSTS = PROD_LIKE
    with pytest.raises(ValidationError) as refused:
        services.deployment_save(actor=None, deployment=deployment, base_url=url)
    assert "許可リスト" in " ".join(refused.value.message_dict["base_url"])
    services.deployment_save(
        actor=None, deployment=deployment, base_url="http://vllm-llmjp.gpu.svc.cluster.local:8000"
    )
    services.deployment_save(actor=None, deployment=deployment, base_url="https://api.vendor.example.jp")
    services.deployment_save(actor=None, deployment=deployment, base_url="http://10.40.3.4:8000")


def test_production_allows_nothing_by_default() -> None:
    policy = EgressPolicy.parse([])
    for host in ("127.0.0.1", "localhost", "api.openai.com", "10.0.0.1"):
        with pytest.raises(EgressRefused):
            policy.check_host(host)


def test_a_malformed_allowlist_fails_the_system_check(settings: Any) -> None:
    from apps.registry.checks import check_upstream_allowlist

    assert check_upstream_allowlist() == []
    settings.GENNAI_UPSTREAM_ALLOWED_HOSTS = ["*.jp"]
    (error,) = check_upstream_allowlist()
    assert error.id == "registry.E001" and "too broad" in error.msg


def test_allowlist_entries_are_checked() -> None:
    with pytest.raises(ValueError, match="too broad"):
        EgressPolicy.parse(["*.jp"])
    for bad in ("foo bar", "http://host", "host/path", "-x.example.jp"):
        with pytest.raises(ValueError, match="not a host name"):
            EgressPolicy.parse([bad])
    assert EgressPolicy.parse(["vllm-llmjp", "API.Vendor.example.jp."]).names == {
        "vllm-llmjp",
        "api.vendor.example.jp",
    }
    policy = EgressPolicy.parse(["*.gpu.svc.cluster.local", "169.254.0.0/16"])
    with pytest.raises(EgressRefused):  # allowlisting the metadata range does not open it
        policy.check_host("169.254.169.254")
    with pytest.raises(EgressRefused):  # the suffix, not a substring
        policy.check_host("gpu.svc.cluster.local.evil.example")


# --- Egress: connect time (DNS rebinding) and the health probe ---------------------------------


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(egress, "resolve", resolve)


@pytest.mark.parametrize(
    ("answer", "allowed"),
    [
        (["169.254.169.254"], ["*.vendor.example.jp", "127.0.0.0/8"]),  # metadata: never
        (["127.0.0.1"], ["*.vendor.example.jp"]),  # loopback behind a public-looking name
        (["203.0.113.10", "127.0.0.1"], ["*.vendor.example.jp"]),  # one bad answer spoils the name
    ],
)
def test_name_rebinding_to_a_forbidden_address_gets_no_connection(
    answer: list[str],
    allowed: list[str],
    db: None,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    secrets_env: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.GENNAI_UPSTREAM_ALLOWED_HOSTS = allowed
    url = f"http://llm.vendor.example.jp:{listener.port}"
    deployment = make_deployment("rebind", url=url)  # passes the URL-time check: the name is allowed
    services.deployment_save(actor=None, deployment=deployment, secret_ref="env:GENNAI_UPSTREAM_LLMJP")
    fake_dns(monkeypatch, {"llm.vendor.example.jp": answer})
    provider = OpenAICompatibleProvider(provider_target(deployment))
    with pytest.raises(UpstreamUnavailable, match="address refused"):
        run(provider.chat(ChatRequest(messages=[{"role": "user", "content": "x"}])).__anext__())
    with caplog.at_level(logging.WARNING):
        states = services.deployment_health_check(deployments=[deployment])  # the Celery probe's path
    assert states == {deployment.pk: HealthState.DOWN}
    deployment.refresh_from_db()
    assert "address refused" in deployment.health_detail
    assert listener.accepted == 0  # no connection: the key never left


def test_allowed_name_and_address_connect(
    db: None, listener: Listener, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Control for the test above: with the loopback network allowlisted the same setup connects."""
    settings.GENNAI_UPSTREAM_ALLOWED_HOSTS = ["*.vendor.example.jp", "127.0.0.0/8"]
    deployment = make_deployment("ok", url=f"http://llm.vendor.example.jp:{listener.port}")
    fake_dns(monkeypatch, {"llm.vendor.example.jp": ["127.0.0.1"]})
    services.deployment_health_check(deployments=[deployment])
    assert listener.accepted >= 1


def test_prod_settings_refuse_an_existing_loopback_row_at_every_layer(
    db: None, listener: Listener, settings: Any
) -> None:
    deployment = make_deployment("old-row", url=f"http://127.0.0.1:{listener.port}")
    settings.GENNAI_UPSTREAM_ALLOWED_HOSTS = PROD_LIKE  # the allowlist tightened after the row was written
    assert services.deployment_health_check(deployments=[deployment]) == {deployment.pk: "down"}
    deployment.refresh_from_db()
    assert "upstream host refused" in deployment.health_detail
    provider = OpenAICompatibleProvider(provider_target(deployment))
    with pytest.raises(UpstreamUnavailable, match="upstream host refused"):
        run(provider.embed(["x"]))
    # And the transport alone (no URL check first) refuses at connect time too.
    backend = egress.GuardedNetworkBackend(EgressPolicy.parse(PROD_LIKE))
    with pytest.raises(EgressRefused):
        run(backend.connect_tcp("127.0.0.1", listener.port))
    assert listener.accepted == 0


@contextlib.contextmanager
def serve(status: int, headers: dict[str, str], body: bytes = b"") -> Iterator[tuple[str, list[str]]]:
    """A one-answer HTTP server on loopback; yields its URL and the paths it was asked for."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append(self.path)
            length = int(self.headers.get("Content-Length", 0))
            self.rfile.read(length)
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_are_not_followed(db: None) -> None:
    with serve(302, {"Location": "http://169.254.169.254/latest/meta-data/"}) as (url, hits):
        target = ProviderTarget(deployment_id=1, name="t", base_url=url, served_model_name="m")
        provider = OpenAICompatibleProvider(target)
        result = run(provider.health())
        with pytest.raises(UpstreamUnavailable, match="redirects are not followed"):
            run(provider.chat(ChatRequest(messages=[{"role": "user", "content": "x"}])).__anext__())
    assert not result.ok and result.detail == "HTTP 302"
    assert hits == ["/v1/models", "/v1/chat/completions"]


# --- Upstream error bodies are not reflected ---------------------------------------------------

SECRET_BODY = b'{"error": {"message": "internal stack trace: db=postgres://owner:hunter2@10.0.0.5/gennai"}}'


def test_error_bodies_stay_in_the_log(db: None, caplog: pytest.LogCaptureFixture) -> None:
    """The /v1 gateway builds its errors from these exceptions: nothing public may carry the body."""
    with serve(400, {"Content-Type": "application/json"}, SECRET_BODY) as (url, _hits):
        target = ProviderTarget(deployment_id=1, name="dep-x", base_url=url, served_model_name="m")
        provider = OpenAICompatibleProvider(target)
        with caplog.at_level(logging.WARNING, logger="gennai.registry.upstream"):
            with pytest.raises(UpstreamRejected) as rejected:
                run(provider.chat(ChatRequest(messages=[{"role": "user", "content": "x"}])).__anext__())
            with pytest.raises(UpstreamRejected) as rejected_embed:
                run(provider.embed(["x"]))
    for exc in (rejected.value, rejected_embed.value):
        public = [str(exc), exc.message, exc.public_message, repr(exc.args), repr(vars(exc))]
        assert not any("hunter2" in text or "stack trace" in text for text in public), public
        assert exc.status == 400 and exc.public_message == "The model server answered HTTP 400."
        assert (exc.__cause__ is None and exc.__context__ is None) or "hunter2" not in repr(exc.__context__)
    assert "hunter2" in caplog.text  # the operator still sees it, in the log


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("", ""),
        ("env:VENDOR_API_KEY", "env:GENNAI_UPSTREAM_VENDOR_API_KEY"),
        ("env:DATABASE_URL", "env:GENNAI_UPSTREAM_DATABASE_URL"),  # names an empty variable: no leak
        ("env:GENNAI_UPSTREAM_LLMJP", "env:GENNAI_UPSTREAM_LLMJP"),
        ("env:GENNAI_UPSTREAM_READ_TIMEOUT", ""),
        ("env:CONNECT_TIMEOUT", ""),
        ("file:llmjp-api-key", "file:llmjp-api-key"),
        ("file:../x", ""),
        ("sk-live-0123", ""),
    ],
)
def test_migration_moves_old_references_into_the_namespace(old: str, new: str) -> None:
    migration = importlib.import_module("apps.registry.migrations.0003_secret_ref_namespace")
    assert migration.converted(old) == new
    if new:
        parse_secret_ref(new)  # a converted reference is a valid one
