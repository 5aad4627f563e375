"""Caches that cannot outlive a revocation (DESIGN.md invariant 11, docs/adr/0005).

The cross-process tests run a second Django process (:mod:`apps.gateway.tests.cache_probe`)
with its own registry snapshot and key cache, change something here, wipe Redis
(``FLUSHALL``, as after a failover), and measure how long the other process
keeps the old answer. The promise is 1 s; the check interval (0.5 s by
default) leaves the rest for the reload and for a loaded two-core machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.gateway import keys
from apps.gateway.models import ApiKey
from apps.gateway.services import api_key_create, api_key_revoke
from apps.registry import snapshot
from apps.registry.models import Deployment
from apps.registry.services import alias_revoke, deployment_save
from apps.tenancy import versions
from apps.tenancy.models import Membership
from tests.support.fixtures import make_user
from tests.support.registry import Upstream, register_alias

REVOCATION_BOUND = 1.0  # seconds: what docs/api.md and ADR 0005 promise


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(settings.REDIS_URL).flushall()


def soon() -> Any:
    return timezone.now() + timedelta(days=30)


class Probe:
    """The other process, speaking one JSON line per command."""

    def __init__(self, db_name: str) -> None:
        env = {
            **os.environ,
            "GENNAI_PROBE_DB_NAME": db_name,
            "DJANGO_SETTINGS_MODULE": "gennai.settings.test",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "apps.gateway.tests.cache_probe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            cwd=settings.BASE_DIR,
        )
        ready = self._read()
        assert ready == {"ready": True}, ready

    def _read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the probe process died")
        return json.loads(line)

    def ask(self, **command: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        reply = self._read()
        assert "error" not in reply, reply["error"]
        return reply["result"]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def probe(django_db_setup: None) -> Iterator[Probe]:
    from django.db import connection

    process = Probe(connection.settings_dict["NAME"])
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(autouse=True)
def _fresh_local_caches() -> Iterator[None]:
    keys.reset_for_tests()
    snapshot.reset_for_tests()
    yield
    keys.reset_for_tests()
    snapshot.reset_for_tests()


# --- Versions -------------------------------------------------------------------------------


def test_bump_is_transactional_and_never_reuses_a_value(db: None) -> None:
    before = versions.read_version("test.cache")
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = versions.bump_version("test.cache")
        assert versions.read_version("test.cache") == rolled_back  # visible to its own transaction
        raise RuntimeError("roll back")
    assert versions.read_version("test.cache") == before  # the change and its version go together
    committed = versions.bump_version("test.cache")
    # A value seen in a rolled-back transaction never comes back: nothing built from rolled-back
    # data can ever look current.
    assert committed not in (before, rolled_back)
    assert versions.bump_version("test.cache") != committed


# --- Across processes, with Redis wiped between the change and the next request -------------


def test_key_revoke_reaches_another_process_after_redis_flush(
    transactional_db: None, probe: Probe, ministries: tuple[Any, Any]
) -> None:
    admin = make_user("admin-x", ministries[0], ["ministry_admin"])
    key, plaintext = api_key_create(actor=admin, ministry=ministries[0], name="x", expires_at=soon())
    flush_redis()  # whatever Redis held before, both sides start from nothing
    probe.ask(op="reset")
    assert probe.ask(op="key", plaintext=plaintext) == keys.KeyState.VALID  # cached over there now

    api_key_revoke(actor=admin, key=key)  # committed
    flush_redis()  # a failover / FLUSHALL right after the revoke
    seen = probe.ask(
        op="watch",
        question={"op": "key", "plaintext": plaintext},
        until_not=keys.KeyState.VALID,
    )
    print(f"key revoke seen by the other process after {seen['seconds']:.3f} s")
    assert seen["answer"] == keys.KeyState.REVOKED
    assert seen["seconds"] <= REVOCATION_BOUND


def test_alias_grant_revoke_reaches_another_process_after_redis_flush(
    transactional_db: None, probe: Probe, ministries: tuple[Any, Any]
) -> None:
    registered = register_alias(upstreams=[Upstream(url="http://127.0.0.1:9/v1")], ministries=ministries)
    question = {"op": "route", "ministry_id": ministries[0].pk, "alias": registered.alias.name, "level": 1}
    flush_redis()
    probe.ask(op="reset")
    allowed = probe.ask(**question)
    assert allowed.startswith("ok:")

    alias_revoke(actor=None, ministry=ministries[0], alias=registered.alias)
    flush_redis()
    seen = probe.ask(op="watch", question=question, until_not=allowed)
    print(f"grant revoke seen by the other process after {seen['seconds']:.3f} s")
    assert seen["answer"] == "refused:model_not_found"
    assert seen["seconds"] <= REVOCATION_BOUND
    # The other ministry's grant is untouched.
    assert probe.ask(**{**question, "ministry_id": ministries[1].pk}).startswith("ok:")


def test_lowered_clearance_reaches_another_process_after_redis_flush(
    transactional_db: None, probe: Probe, ministries: tuple[Any, Any]
) -> None:
    registered = register_alias(
        upstreams=[Upstream(url="http://127.0.0.1:9/v1", clearance=2)], ministries=ministries[:1]
    )
    question = {"op": "route", "ministry_id": ministries[0].pk, "alias": registered.alias.name, "level": 2}
    flush_redis()
    probe.ask(op="reset")
    allowed = probe.ask(**question)
    assert allowed.startswith("ok:")

    deployment_save(actor=None, deployment=registered.deployments[0], clearance=1)
    flush_redis()
    seen = probe.ask(op="watch", question=question, until_not=allowed)
    print(f"lowered clearance seen by the other process after {seen['seconds']:.3f} s")
    assert seen["answer"].startswith("refused:")
    assert seen["seconds"] <= REVOCATION_BOUND


@pytest.mark.parametrize("change", ["ministry_deactivated", "creator_demoted"])
def test_key_facts_change_reaches_another_process_after_redis_flush(
    transactional_db: None, probe: Probe, ministries: tuple[Any, Any], change: str
) -> None:
    admin = make_user("admin-y", ministries[0], ["ministry_admin"])
    _key, plaintext = api_key_create(actor=admin, ministry=ministries[0], name="y", expires_at=soon())
    flush_redis()
    probe.ask(op="reset")
    assert probe.ask(op="key", plaintext=plaintext) == keys.KeyState.VALID

    if change == "ministry_deactivated":
        ministry = ministries[0]
        ministry.active = False
        ministry.save()
        expected = keys.KeyState.INVALID
    else:  # the IdP moved the creator from /ministries/digital/admins to staff
        membership = Membership.objects.get(user=admin, ministry=ministries[0])
        membership.roles = ["staff"]
        membership.save()
        expected = keys.KeyState.REVOKED
    flush_redis()
    seen = probe.ask(
        op="watch",
        question={"op": "key", "plaintext": plaintext},
        until_not=keys.KeyState.VALID,
    )
    print(f"{change} seen by the other process after {seen['seconds']:.3f} s")
    assert seen["answer"] == expected
    assert seen["seconds"] <= REVOCATION_BOUND


class WebServer:
    """The production ASGI app (lean /v1 front + Django) under uvicorn in a process of its own."""

    def __init__(self, db_name: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "GENNAI_PROBE_DB_NAME": db_name,
            "DJANGO_SETTINGS_MODULE": "gennai.settings.test",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "apps.gateway.tests.cache_probe", "serve", str(port)],
            env=env,
            cwd=settings.BASE_DIR,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/v1/models", timeout=1.0)
                break
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("the web process did not start") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def poll_until(request: Any, *, status: int, timeout: float = 5.0) -> tuple[int, float]:
    """Send ``request()`` until it answers ``status``; the last status and the seconds it took."""
    started = time.monotonic()
    while True:
        response = request()
        elapsed = time.monotonic() - started
        if response.status_code == status or elapsed > timeout:
            return response.status_code, elapsed
        time.sleep(0.01)


def test_v1_requests_of_another_web_process_see_revocations_after_redis_flush(
    transactional_db: None, world: Any, make_key: Any
) -> None:
    """The issue's scenario end to end: real requests to a second uvicorn process."""
    from django.db import connection

    _key, plaintext = make_key(name="cross-process")
    chat = {"model": "a-only", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {plaintext}", "X-Gennai-Confidentiality": "1"}
    web = WebServer(connection.settings_dict["NAME"])
    try:
        with httpx.Client(base_url=web.url, headers=headers, timeout=10) as http:

            def ask() -> Any:
                return http.post("/v1/chat/completions", json=chat)

            flush_redis()
            assert ask().status_code == 200  # key facts and routes are now cached over there
            alias_revoke(actor=None, ministry=world.ministry_a, alias=world.aliases["a-only"])
            flush_redis()
            status, seconds = poll_until(ask, status=404)
            print(f"/v1: grant revoke seen by another web process after {seconds:.3f} s")
            assert status == 404 and seconds <= REVOCATION_BOUND

            api_key_revoke(actor=None, key=ApiKey.objects.get(name="cross-process"))
            flush_redis()
            status, seconds = poll_until(lambda: http.get("/v1/models"), status=401)
            print(f"/v1: key revoke seen by another web process after {seconds:.3f} s")
            assert status == 401 and seconds <= REVOCATION_BOUND
    finally:
        web.close()


# --- Retries and the maximum age ------------------------------------------------------------


def test_retried_key_revoke_bumps_again(db: None, ministries: tuple[Any, Any]) -> None:
    admin = make_user("admin-r", ministries[0], ["ministry_admin"])
    key, _plaintext = api_key_create(actor=admin, ministry=ministries[0], name="r", expires_at=soon())
    api_key_revoke(actor=admin, key=key)
    first = versions.read_version(keys.VERSION_NAME)
    api_key_revoke(actor=admin, key=key)  # e.g. the admin clicks again after a timeout
    assert versions.read_version(keys.VERSION_NAME) != first


def test_retried_grant_revoke_bumps_again(db: None, ministries: tuple[Any, Any]) -> None:
    registered = register_alias(upstreams=[Upstream(url="http://127.0.0.1:9/v1")], ministries=ministries)
    assert alias_revoke(actor=None, ministry=ministries[0], alias=registered.alias)
    first = snapshot.current_version()
    assert not alias_revoke(actor=None, ministry=ministries[0], alias=registered.alias)
    assert snapshot.current_version() != first


def test_snapshot_reloads_after_max_age_even_without_a_version_change(
    db: None, ministries: tuple[Any, Any], settings: Any
) -> None:
    settings.GENNAI_CACHE_CHECK_SECONDS = 1.0
    settings.GENNAI_CACHE_MAX_AGE_SECONDS = 0.2
    registered = register_alias(upstreams=[Upstream(url="http://127.0.0.1:9/v1", clearance=2)])
    deployment = registered.deployments[0]
    assert snapshot.get_snapshot().deployments[deployment.pk].clearance == 2
    # A change that bypasses the services (and so the version): only the maximum age catches it.
    Deployment.objects.filter(pk=deployment.pk).update(clearance=1)
    assert snapshot.get_snapshot().deployments[deployment.pk].clearance == 2
    time.sleep(0.25)
    assert snapshot.get_snapshot().deployments[deployment.pk].clearance == 1


def test_key_facts_reload_after_max_age_even_without_a_version_change(
    db: None, ministries: tuple[Any, Any], settings: Any
) -> None:
    settings.GENNAI_CACHE_CHECK_SECONDS = 1.0
    settings.GENNAI_CACHE_MAX_AGE_SECONDS = 0.2
    admin = make_user("admin-m", ministries[0], ["ministry_admin"])
    key, plaintext = api_key_create(actor=admin, ministry=ministries[0], name="m", expires_at=soon())
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.VALID
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())  # bypasses the version
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.VALID
    assert keys.cached_key(plaintext) is not None
    time.sleep(0.25)
    assert keys.cached_key(plaintext) is None  # too old to answer without a reload
    assert keys.check_key(keys.lookup_key(plaintext), plaintext) == keys.KeyState.REVOKED


def test_version_check_is_throttled(db: None, ministries: tuple[Any, Any], settings: Any) -> None:
    """Within the check interval the cache answers without I/O; after it, one version read."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.GENNAI_CACHE_CHECK_SECONDS = 0.2
    admin = make_user("admin-t", ministries[0], ["ministry_admin"])
    _key, plaintext = api_key_create(actor=admin, ministry=ministries[0], name="t", expires_at=soon())
    keys.lookup_key(plaintext)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(50):
            assert keys.cached_key(plaintext) is not None
            keys.lookup_key(plaintext)
    assert len(queries) == 0
    time.sleep(0.25)
    assert keys.cached_key(plaintext) is None
    with CaptureQueriesContext(connection) as queries:
        keys.lookup_key(plaintext)
    assert len(queries) == 1 and "tenancy_cacheversion" in queries[0]["sql"]


def test_facts_loaded_across_an_invalidation_are_not_kept(
    db: None, ministries: tuple[Any, Any], monkeypatch: Any
) -> None:
    """A lookup whose load straddles a revoke must not store the pre-revoke facts after the drop."""
    admin = make_user("admin-race", ministries[0], ["ministry_admin"])
    _key, plaintext = api_key_create(actor=admin, ministry=ministries[0], name="race", expires_at=soon())
    real_load = keys._load

    def load_then_invalidate(prefix: str) -> Any:
        info = real_load(prefix)  # the facts as they were before the revoke…
        keys._drop_local()  # …which commits (and is announced) while this load is in flight
        return info

    monkeypatch.setattr(keys, "_load", load_then_invalidate)
    assert keys.lookup_key(plaintext) is not None
    assert plaintext[3:11] not in keys._cache.entries
    monkeypatch.setattr(keys, "_load", real_load)
    keys.lookup_key(plaintext)
    assert plaintext[3:11] in keys._cache.entries  # an undisturbed load is kept
