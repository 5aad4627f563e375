"""How many concurrent SSE streams one web process holds, and the memory each costs.

Run (embedded PostgreSQL and Redis started and stopped for you)::

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/streams_per_process.py

It configures Django with ``gennai.settings.test``, creates and migrates a scratch
database (``bench_gennai_streams``) as the owner role, registers one alias whose
deployment is a *holding* fake model server, and starts **one** web process
(``tests.support.web_process``: uvicorn running ``gennai.asgi``, psycopg pool of
``--pool`` connections, as in production). The fake model answers every request
with one token and then holds the stream open, sending nothing, until it is told
to finish: a stream that waits on a slow model, the case that used to pin a
database connection each.

For each step in ``--steps`` (cumulative), the client opens that many more
streams and waits until every one of them has its first token. Then, with all
of them open, it records the web process's resident memory (``VmRSS``) and
thread count from ``/proc``, the number of its connections in
``pg_stat_activity``, and the time a page view (``GET /chat/``) and a ``/v1``
model list take. At the end the model is released, every stream must end
complete (``event: done`` / ``data: [DONE]``), and the scratch database is
dropped.

Memory per stream = (RSS with N streams − RSS after warm-up) / N.

Stream kinds (``--kind``): ``chat`` (browser SSE: session cookie, the whole
middleware stack, the ``stream_open`` hop, a final save) or ``v1``
(``POST /v1/chat/completions`` with an API key through the lean gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", choices=["chat", "v1"], default="chat")
    parser.add_argument("--steps", default="250,500,1000,2000", help="cumulative stream counts to measure at")
    parser.add_argument("--pool", type=int, default=20, help="the web process's connection pool size")
    parser.add_argument("--batch", type=int, default=100, help="streams opened at once while ramping up")
    parser.add_argument("--database", default="bench_gennai_streams")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    return parser.parse_args()


def setup_django(database: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "gennai.settings.test"
    os.environ["GENNAI_TEST_DB_NAME"] = database
    import django

    django.setup()


def raise_fd_limit() -> None:
    """Each stream is two sockets in the web process and two here; the child inherits this."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- The holding fake model server (asyncio: thousands of open streams are cheap) -----------


class HoldingUpstream:
    """OpenAI-compatible ``/chat/completions``: one token, then hold until :meth:`release`."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.open_streams = 0
        self.server: asyncio.AbstractServer | None = None
        # Bound now, so the registry can point at it before the event loop runs.
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    async def start(self) -> None:
        self.released = asyncio.Event()  # bound to the running loop
        self.server = await asyncio.start_server(self._handle, sock=self.sock, backlog=8192)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def release(self) -> None:
        self.released.set()

    @staticmethod
    def _event(payload: dict[str, Any]) -> bytes:
        data = b"data: " + json.dumps(payload).encode() + b"\n\n"
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET"):
                    body = json.dumps({"object": "list", "data": [{"id": "fake-model"}]}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    await writer.drain()
                    continue
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                chunk = {"object": "chat.completion.chunk", "model": "fake-model", "choices": []}
                first = {
                    **chunk,
                    "choices": [{"index": 0, "delta": {"content": "token "}, "finish_reason": None}],
                }
                writer.write(self._event(first))
                await writer.drain()
                self.open_streams += 1
                try:
                    await self.released.wait()
                finally:
                    self.open_streams -= 1
                last = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                usage = {**chunk, "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
                writer.write(self._event(last) + self._event(usage))
                done = b"data: [DONE]\n\n"
                writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the benchmark is shutting the server down
        finally:
            writer.close()


# --- Fixtures in the scratch database ------------------------------------------------------


@dataclass
class World:
    alias: str
    cookie: dict[str, str]
    api_key: str
    user: Any
    ministry: Any


def build_world(upstream_url: str) -> World:
    from datetime import timedelta

    from django.conf import settings
    from django.test import Client
    from django.utils import timezone

    from apps.gateway.services import api_key_create
    from apps.registry.models import Deployment
    from apps.tenancy.models import Ministry
    from tests.support.fixtures import make_user
    from tests.support.registry import Upstream, register_alias

    ministry = Ministry.objects.create(code="bench", name_ja="ベンチ庁", name_en="Bench Agency")
    registered = register_alias(upstreams=[Upstream(upstream_url)], ministries=[ministry])
    # Room for every stream at the model: the provider's HTTP pool is 2 × max_concurrency.
    Deployment.objects.filter(pk__in=[d.pk for d in registered.deployments]).update(max_concurrency=100_000)
    user = make_user("bench-staff", ministry, ["staff"])
    client = Client()
    client.force_login(user)
    cookie = {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}
    _key, plaintext = api_key_create(
        actor=None,
        ministry=ministry,
        name="bench",
        expires_at=timezone.now() + timedelta(days=1),
        max_level=2,
    )
    return World(registered.alias.name, cookie, str(plaintext), user, ministry)


def pending_chat_streams(world: World, n: int) -> list[str]:
    """``n`` conversations each with an unclaimed streaming answer; their stream URLs."""
    from django.urls import reverse

    from apps.chat.models import Conversation, Message, Role, Status
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=world.ministry.pk):
        conversations = Conversation.objects.bulk_create(
            [
                Conversation(
                    ministry=world.ministry, owner=world.user, alias_name=world.alias, level=2, title=f"b{i}"
                )
                for i in range(n)
            ]
        )
        Message.objects.bulk_create(
            [
                Message(
                    ministry=world.ministry,
                    conversation=c,
                    role=Role.USER,
                    content="質問",
                    status=Status.COMPLETE,
                )
                for c in conversations
            ]
        )
        answers = Message.objects.bulk_create(
            [
                Message(
                    ministry=world.ministry,
                    conversation=c,
                    role=Role.ASSISTANT,
                    content="",
                    status=Status.STREAMING,
                )
                for c in conversations
            ]
        )
    return [reverse("chat:message_stream", args=[m.conversation_id, m.pk]) for m in answers]


# --- Measuring ------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    return {"rss_kib": fields["VmRSS"], "threads": fields["Threads"]}


@dataclass
class Stream:
    first: asyncio.Event
    body: bytes = b""
    status: int = 0
    error: str = ""


async def drive(stream: Stream, client: Any, method: str, url: str, **kw: Any) -> None:
    import httpx

    try:
        async with client.stream(method, url, **kw) as response:
            stream.status = response.status_code
            async for chunk in response.aiter_bytes():
                stream.body += chunk
                if not stream.first.is_set() and (b"event: token" in stream.body or b"token " in stream.body):
                    stream.first.set()
    except httpx.HTTPError as exc:
        stream.error = repr(exc)
    finally:
        stream.first.set()


async def run(
    args: argparse.Namespace, steps: list[int], upstream: HoldingUpstream, world: World, urls: list[str]
) -> dict[str, Any]:
    import httpx

    from tests.support.web_process import WebProcess

    await upstream.start()
    auth = {"Authorization": f"Bearer {world.api_key}"}
    v1_body = {"model": world.alias, "messages": [{"role": "user", "content": "こんにちは"}], "stream": True}

    # Held streams are silent far longer than the production read timeout (120 s)
    # would allow a model to be; the benchmark measures holding, not that timeout.
    web = WebProcess(
        pool_max=args.pool, pool_min=2, pool_timeout=10.0, extra_env={"GENNAI_UPSTREAM_READ_TIMEOUT": "3600"}
    )
    await asyncio.to_thread(web.start)
    pg = _backends_counter(web.application_name)
    results: dict[str, Any] = {"kind": args.kind, "pool": args.pool, "steps": []}
    try:
        # Held streams are silent for minutes: no read timeout. One client per batch keeps
        # each client's connection pool small (httpcore scans its pool per request).
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        timeout = httpx.Timeout(30.0, read=None)
        clients: list[httpx.AsyncClient] = []

        def new_client() -> httpx.AsyncClient:
            clients.append(httpx.AsyncClient(base_url=web.url, limits=limits, timeout=timeout))
            return clients[-1]

        client = new_client()
        async with httpx.AsyncClient(base_url=web.url, timeout=30.0) as probe:
            # Warm-up: a few complete requests load every code path before the baseline.
            upstream.release()
            for _ in range(3):
                await probe.get("/chat/", cookies=world.cookie)
                await probe.get("/v1/models", headers=auth)
            if args.kind == "chat":
                warm = [Stream(asyncio.Event()) for _ in range(3)]
                for s, url in zip(warm, urls[-3:], strict=True):
                    await drive(s, client, "GET", url, cookies=world.cookie)
                urls = urls[:-3]
            upstream.released = asyncio.Event()
            await asyncio.sleep(1.0)
            base = proc_status(web.pid)
            results["baseline"] = base
            print(f"baseline: RSS {base['rss_kib'] / 1024:.1f} MiB, {base['threads']} threads", flush=True)

            streams: list[Stream] = []
            tasks: list[asyncio.Task[None]] = []
            for target in steps:
                started = time.monotonic()
                while len(streams) < target:
                    client = new_client()
                    batch = []
                    for _ in range(min(args.batch, target - len(streams))):
                        s = Stream(asyncio.Event())
                        streams.append(s)
                        batch.append(s)
                        if args.kind == "chat":
                            coro = drive(s, client, "GET", urls[len(streams) - 1], cookies=world.cookie)
                        else:
                            coro = drive(
                                s, client, "POST", "/v1/chat/completions", json=v1_body, headers=auth
                            )
                        tasks.append(asyncio.create_task(coro))
                    await asyncio.wait_for(asyncio.gather(*(s.first.wait() for s in batch)), 300)
                ramp = time.monotonic() - started
                # Failed: an error, or a stream that already ended although the model still holds it.
                failed = [
                    s
                    for s, task in zip(streams, tasks, strict=True)
                    if s.status != 200 or s.error or task.done()
                ]
                await asyncio.sleep(2.0)  # settle: nothing is in flight but the held streams
                now = proc_status(web.pid)
                t = time.monotonic()
                page = await probe.get("/chat/", cookies=world.cookie)
                page_s = time.monotonic() - t
                t = time.monotonic()
                models = await probe.get("/v1/models", headers=auth)
                v1_s = time.monotonic() - t
                open_now = sum(not task.done() for task in tasks)
                row = {
                    "streams": target,
                    "open": open_now,
                    "upstream_open": upstream.open_streams,
                    "failed": len(failed),
                    "ramp_s": round(ramp, 2),
                    "rss_kib": now["rss_kib"],
                    "threads": now["threads"],
                    "rss_per_stream_kib": round((now["rss_kib"] - base["rss_kib"]) / target, 1),
                    "db_connections": pg(),
                    "page_ms": round(page_s * 1000, 1),
                    "page_status": page.status_code,
                    "v1_models_ms": round(v1_s * 1000, 1),
                    "v1_models_status": models.status_code,
                }
                results["steps"].append(row)
                print(json.dumps(row), flush=True)
                if failed:
                    sample = failed[0]
                    print(f"first failure: {sample.status} {sample.error} {sample.body[-300:]!r}", flush=True)
                    break
            upstream.release()
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*tasks), 1800)
            results["drain_s"] = round(time.monotonic() - started, 1)
            marker = b"event: done" if args.kind == "chat" else b"data: [DONE]"
            results["completed"] = sum(marker in s.body for s in streams)
            results["total"] = len(streams)
            print(
                f"completed {results['completed']}/{results['total']} streams in {results['drain_s']} s "
                "after the model released them",
                flush=True,
            )
    finally:
        pg.close()
        for c in clients:
            await c.aclose()
        web.stop()
        if upstream.server is not None:
            upstream.server.close()
    return results


def _backends_counter(application_name: str) -> Any:
    import psycopg
    from django.db import connection
    from psycopg.conninfo import make_conninfo

    db = connection.settings_dict
    params = {"HOST": "host", "PORT": "port", "USER": "user", "PASSWORD": "password", "NAME": "dbname"}
    conn = psycopg.connect(
        make_conninfo(**{v: str(db[k]) for k, v in params.items() if db.get(k)}), autocommit=True
    )

    def count() -> int:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name]
        ).fetchone()
        return int(row[0]) if row else 0

    count.close = conn.close  # type: ignore[attr-defined]
    return count


def main() -> int:
    args = parse_args()
    steps = sorted(int(s) for s in args.steps.split(","))
    raise_fd_limit()
    setup_django(args.database)
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    from apps.tenancy.db import owner_mode

    with owner_mode():
        config = setup_databases(verbosity=0, interactive=False, keepdb=False)
    try:
        upstream = HoldingUpstream()
        world = build_world(upstream.url)
        urls = pending_chat_streams(world, steps[-1] + 3) if args.kind == "chat" else []
        connection.close()
        results = asyncio.run(run(args, steps, upstream, world, urls))
    finally:
        connection.close()
        with owner_mode():
            teardown_databases(config, verbosity=0)
    results["environment"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if results.get("completed") == results.get("total") else 1


if __name__ == "__main__":
    raise SystemExit(main())
