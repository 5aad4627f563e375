"""DESIGN invariant 10: an open stream holds no database connection.

The end-to-end test starts a real web process (uvicorn, Django's ASGI app) whose
connection pool has ``POOL`` connections, and opens ten times as many slow
streams at once: chat SSE streams and ``/v1`` streams, from two ministries.
While all of them are open and waiting on the (slow, fake) model, page views,
a login and the other ministry's requests must answer within a second, and
``pg_stat_activity`` must show at most ``POOL`` connections of that process.
If any stream kept its connection, the fifth stream would already wait for the
pool (and fail after the pool timeout), and so would every page.

The static test keeps the async code of the chat stream on the rule: it reaches
the database only through ``apps.tenancy.connections.db_hop``/``scoped_db_hop``.
"""

from __future__ import annotations

import ast
import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from psycopg.conninfo import make_conninfo

from apps.chat.models import Message, Role, Status
from apps.chat.tests.factories import make_conversation, make_message
from apps.registry.models import Deployment
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import make_user
from tests.support.idp import DevIdP
from tests.support.oidc import idp_authorize
from tests.support.registry import Upstream, register_alias
from tests.support.web_process import WebProcess

POOL = 4
PER_KIND = POOL * 10 // 4  # chat A, chat B, /v1 A, /v1 B: 40 streams in all = 10 × the pool
# The fake model sends a token, then one a second (the pause): every stream stays open
# while the probes run. Then the pause is lifted and the rest streams out at once.
TOKENS, PAUSE = 30, 1.0
ANSWER_WITHIN = 1.0


@dataclass
class Stream:
    kind: str
    first_token: asyncio.Event = field(default_factory=asyncio.Event)
    body: bytes = b""
    status: int = 0
    error: str = ""


def _session_cookie(user: Any) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def _api_key(ministry: Any) -> str:
    from apps.gateway.services import api_key_create

    _key, plaintext = api_key_create(
        actor=None,
        ministry=ministry,
        name="connection test",
        expires_at=timezone.now() + timedelta(days=1),
        max_level=2,
    )
    return str(plaintext)


def _pending_answers(user: Any, ministry: Any, alias: str, n: int) -> list[str]:
    """``n`` conversations with an unclaimed streaming answer; their stream URLs."""
    urls = []
    with ministry_scope(ministry_id=ministry.pk):
        for i in range(n):
            conversation = make_conversation(user, ministry, alias_name=alias, title=f"会話{i}")
            make_message(conversation, role=Role.USER, content=f"質問{i}")
            answer = make_message(conversation, role=Role.ASSISTANT, content="", status=Status.STREAMING)
            urls.append(reverse("chat:message_stream", args=[conversation.pk, answer.pk]))
    return urls


class Backends:
    """Counts a process's connections in ``pg_stat_activity`` (own connection: usable from async code)."""

    def __init__(self, application_name: str) -> None:
        db = connection.settings_dict
        params = {"HOST": "host", "PORT": "port", "USER": "user", "PASSWORD": "password", "NAME": "dbname"}
        self.application_name = application_name
        self.conn = psycopg.connect(
            make_conninfo(**{v: str(db[k]) for k, v in params.items() if db.get(k)}), autocommit=True
        )

    def count(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self.application_name]
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


async def _drive(stream: Stream, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> None:
    try:
        async with client.stream(method, url, **kw) as response:
            stream.status = response.status_code
            async for chunk in response.aiter_bytes():
                stream.body += chunk
                if not stream.first_token.is_set() and (
                    b"event: token" in stream.body or b'"content": "tok' in stream.body
                ):
                    stream.first_token.set()
    except httpx.HTTPError as exc:
        stream.error = repr(exc)
    finally:
        stream.first_token.set()  # never leave the waiter hanging; status/body tell the truth


async def _oidc_login(base_url: str, username: str) -> list[tuple[str, int, float]]:
    """A real login through the dev IdP; the app's two requests are timed (the IdP's pages are not)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as browser:
        started = time.monotonic()
        start = await browser.get("/accounts/login/")
        timed = [("login start", start.status_code, time.monotonic() - started)]
        callback = await asyncio.to_thread(
            idp_authorize, start.headers["location"], username, stop_prefix=base_url
        )
        started = time.monotonic()
        done = await browser.get(callback)  # token exchange, claims, user and membership sync
        timed.append(("login callback", done.status_code, time.monotonic() - started))
    return timed


def _streams_while_probing(
    ministries: tuple[Any, Any], *, chat_per_ministry: int, v1_per_ministry: int, idp: DevIdP | None = None
) -> None:
    """Open the streams, probe while all are open, check everything finished properly."""
    a, b = ministries
    with FakeUpstream(tokens=TOKENS, delay=PAUSE) as fake:
        registered = register_alias(upstreams=[Upstream(fake.url)], ministries=[a, b])
        alias = registered.alias.name
        # Room for every stream at the model (the provider's HTTP pool is 2 × max_concurrency).
        Deployment.objects.filter(pk__in=[d.pk for d in registered.deployments]).update(max_concurrency=100)
        users = {m.code: make_user(f"conn-{m.code}", m, ["staff"]) for m in (a, b)}
        cookies = {code: _session_cookie(user) for code, user in users.items()}
        keys = {m.code: _api_key(m) for m in (a, b)} if v1_per_ministry else {}
        chat_urls = {m.code: _pending_answers(users[m.code], m, alias, chat_per_ministry) for m in (a, b)}
        v1_body = {"model": alias, "messages": [{"role": "user", "content": "こんにちは"}], "stream": True}
        probes_to_run: list[tuple[str, str, str, dict[str, Any]]] = [
            ("page A", "GET", "/chat/", {"cookies": cookies[a.code]}),
            ("page B", "GET", "/chat/", {"cookies": cookies[b.code]}),
            ("home B", "GET", "/", {"cookies": cookies[b.code]}),
            ("login", "GET", "/accounts/login/", {}),
            ("page A again", "GET", "/chat/", {"cookies": cookies[a.code]}),
        ]
        if keys:
            auth_b = {"Authorization": f"Bearer {keys[b.code]}"}
            probes_to_run.append(("/v1 models B", "GET", "/v1/models", {"headers": auth_b}))

        with WebProcess(pool_max=POOL, pool_timeout=5.0) as web:
            if idp is not None:
                idp.register_app(web.url)  # the IdP may send the browser back to this process

            async def scenario(pg: Backends) -> tuple[list[Stream], list[tuple[str, int, float]], list[int]]:
                limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
                async with httpx.AsyncClient(base_url=web.url, limits=limits, timeout=30.0) as client:
                    streams: list[Stream] = []
                    tasks = []
                    for code in (a.code, b.code):
                        for url in chat_urls[code]:
                            streams.append(Stream(kind=f"chat-{code}"))
                            coro = _drive(streams[-1], client, "GET", url, cookies=cookies[code])
                            tasks.append(asyncio.create_task(coro))
                        for _ in range(v1_per_ministry):
                            streams.append(Stream(kind=f"v1-{code}"))
                            headers = {"Authorization": f"Bearer {keys[code]}"}
                            coro = _drive(
                                streams[-1],
                                client,
                                "POST",
                                "/v1/chat/completions",
                                json=v1_body,
                                headers=headers,
                            )
                            tasks.append(asyncio.create_task(coro))
                    await asyncio.wait_for(asyncio.gather(*(s.first_token.wait() for s in streams)), 15)
                    broken = [
                        (s.kind, s.status, s.error, s.body[-300:])
                        for s in streams
                        if s.status != 200 or s.error
                    ]
                    assert not broken, (
                        f"{len(broken)} of {len(streams)} streams failed to start: {broken[:3]}"
                    )
                    # Every stream has started and is now waiting on the slow model.
                    probes: list[tuple[str, int, float]] = []
                    backends: list[int] = [pg.count()]
                    async with httpx.AsyncClient(base_url=web.url, timeout=10.0) as fresh:
                        for name, method, url, kw in probes_to_run:
                            fresh.cookies.clear()
                            fresh.cookies.update(kw.get("cookies", {}))
                            started = time.monotonic()
                            response = await fresh.request(method, url, headers=kw.get("headers"))
                            probes.append((name, response.status_code, time.monotonic() - started))
                            backends.append(pg.count())
                    if idp is not None:
                        probes += await _oidc_login(web.url, "suzuki")  # 総務省 (B) staff
                        backends.append(pg.count())
                    still_open = sum(not t.done() for t in tasks)
                    assert still_open == len(tasks), (
                        f"{still_open}/{len(tasks)} streams open during the probes"
                    )
                    fake.delay = 0.0  # lift the pause: the rest of every answer streams out now
                    await asyncio.wait_for(asyncio.gather(*tasks), 20)
                    return streams, probes, backends

            pg = Backends(web.application_name)
            try:
                streams, probes, backends = asyncio.run(scenario(pg))
            except BaseException:
                print(web.log_tail())  # the web process's log, shown with the failure
                raise
            finally:
                pg.close()

    failed = [(s.kind, s.status, s.error, s.body[-200:]) for s in streams if s.status != 200 or s.error]
    assert not failed, failed
    for s in streams:
        assert (b"event: done" if s.kind.startswith("chat") else b"data: [DONE]") in s.body, s.body[-300:]
    print("probes (name, status, seconds):", probes, "connections of the process:", backends)
    slow = [p for p in probes if p[2] > ANSWER_WITHIN or p[1] not in (200, 302)]
    assert not slow, f"requests while {len(streams)} streams were open: {probes}"
    assert 1 <= max(backends) <= POOL, f"connections of the web process in pg_stat_activity: {backends}"
    for m in (a, b):
        with ministry_scope(ministry_id=m.pk):
            statuses = set(
                Message.objects.filter(role=Role.ASSISTANT, conversation__owner=users[m.code]).values_list(
                    "status", flat=True
                )
            )
        assert statuses == {Status.COMPLETE}, statuses


@pytest.mark.django_db(transaction=True)
def test_open_chat_streams_hold_no_connection(ministries: tuple[Any, Any]) -> None:
    """10 × the pool in chat SSE streams (both ministries): pages and logins still answer."""
    _streams_while_probing(ministries, chat_per_ministry=POOL * 5, v1_per_ministry=0)


@pytest.mark.django_db(transaction=True)
def test_open_chat_and_v1_streams_hold_no_connection(ministries: tuple[Any, Any], dev_idp: DevIdP) -> None:
    """10 × the pool in chat and ``/v1`` streams from two ministries (issue 6, section 3); a
    real OIDC login through the dev IdP completes meanwhile."""
    _streams_while_probing(ministries, chat_per_ministry=PER_KIND, v1_per_ministry=PER_KIND, idp=dev_idp)


# --- Static rule: async code reaches the database only through the hop helpers ------------

ROOT = Path(__file__).resolve().parents[1]
# Middleware may hop with sync_to_async: whatever it opens is given back by
# MinistryScopeMiddleware / ReleaseConnectionsMiddleware before a view or body waits.
SYNC_TO_ASYNC_ALLOWED = {
    "apps/tenancy/connections.py": "the hop helpers themselves",
    "apps/accounts/middleware.py": "ClaimsRecheckMiddleware: released before any view waits (above)",
}
ORM_NAMES = {"objects", "_base_manager", "_default_manager"}


def _async_bodies(node: ast.AST) -> list[ast.AST]:
    """The statements of an ``async def``, without nested sync functions (those run in a hop)."""
    found: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, (ast.FunctionDef, ast.Lambda, ast.AsyncFunctionDef)):
            continue
        found.append(child)
        stack.extend(ast.iter_child_nodes(child))
    return found


def async_db_violations(root: Path = ROOT) -> list[str]:
    """Every ``sync_to_async`` outside the allowlist, and every ORM manager or ``connection``
    used directly inside an ``async def``, in the application's modules (tests excluded)."""
    problems: list[str] = []
    for path in sorted((root / "apps").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "/tests/" in rel or "/migrations/" in rel:
            continue
        tree = ast.parse(path.read_text(), filename=rel)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Name)
                and node.id in {"sync_to_async", "database_sync_to_async"}
                and rel not in SYNC_TO_ASYNC_ALLOWED
            ):
                problems.append(f"{rel}:{node.lineno}: {node.id}")
            if isinstance(node, ast.AsyncFunctionDef):
                for inner in _async_bodies(node):
                    if isinstance(inner, ast.Attribute) and inner.attr in ORM_NAMES:
                        problems.append(f"{rel}:{inner.lineno}: ORM manager in async def {node.name}")
                    if isinstance(inner, ast.Name) and inner.id in {"connection", "connections"}:
                        problems.append(f"{rel}:{inner.lineno}: {inner.id} in async def {node.name}")
    return problems


def test_async_code_reaches_the_database_only_through_db_hop() -> None:
    """``sync_to_async`` keeps the request thread's connection until the request ends, and
    the ORM cannot run on the event loop: async code uses ``db_hop``/``scoped_db_hop``."""
    problems = async_db_violations()
    assert not problems, "use apps.tenancy.connections.db_hop / scoped_db_hop:\n" + "\n".join(problems)


def test_the_static_rule_catches_a_violation(tmp_path: Path) -> None:
    (tmp_path / "apps" / "demo").mkdir(parents=True)
    (tmp_path / "apps" / "demo" / "views.py").write_text(
        "from asgiref.sync import sync_to_async\n"
        "async def view(request):\n"
        "    rows = Thing.objects.all()\n"
        "    def inner():\n"
        "        return Thing.objects.count()\n"
        "    return await sync_to_async(inner)()\n"
    )
    problems = async_db_violations(tmp_path)
    assert any("ORM manager in async def view" in p and ":3:" in p for p in problems), problems
    assert not any(":5:" in p for p in problems), "a nested sync function runs in a hop: not a violation"
    assert any(":6: sync_to_async" in p for p in problems), problems
