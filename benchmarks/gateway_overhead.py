"""What ``/v1`` costs on top of the model server: TTFT, throughput and CPU per request.

Run it with ``make bench-gateway`` (embedded PostgreSQL and Redis via
``gennai.devstack env``), or by hand with ``DATABASE_URL``/``REDIS_URL`` set::

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/gateway_overhead.py

What it starts, each in its own process:

* a fake model server: 50 ms to the first byte, then 64 content chunks, a
  finish chunk, a usage chunk and ``[DONE]`` (``--chunk-delay-ms N``: N ms
  between content chunks, as a model server that emits tokens at a realistic
  pace, so that a high concurrency stays below saturation). By default it is
  served as vLLM serves: uvicorn, uvloop, httptools, one event loop
  (:func:`serve_upstream_uvicorn`); ``--upstream threaded`` is the test suite's
  threaded fake (``tests/support/fake_upstream.py``) that earlier results used;
* our server: ``uvicorn gennai.asgi:application`` (httptools, uvloop, one
  process, development settings with the connection pool), after migrating the
  database and registering a deployment of the fake upstream behind the alias
  ``bench-chat`` and an API key;
* when ``LITELLM_VENV`` names a virtualenv with ``litellm[proxy]``: LiteLLM's
  proxy (one process) with the same upstream as its only model.

For each concurrency (1, 10, 50, 200) the targets run alternately, twice each
(A B A B …), for ``--seconds`` each: ``concurrency`` closed-loop clients on
keep-alive connections send streamed chat completions. Reported per target and
concurrency: TTFT (time to the first SSE frame) and total time p50/p95/p99,
requests per second, and the CPU time (user+system, from ``/proc``) of the
server process and of the upstream process divided by the requests completed
in that phase. The load generator is a minimal HTTP/1.1 client on uvloop
streams that parses each piece it reads from a buffer, so that it takes as
little of the machine's CPU as possible (≈2–3 ms per 67-chunk answer).

Clients in step (``--stagger``): with every client starting at the same instant
and every answer taking the same time, closed-loop clients stay in step for the
whole phase: at concurrency 50 the gateway gets 50 new requests within a few
milliseconds once per answer time, and the last of them waits for the other 49
(``crowd_5ms`` in the JSON: the median number of other requests written within
±5 ms of each one; ≈20–30 in step, 0–1 when staggered). ``--stagger 1`` spreads
the clients' first requests over one second (one answer at 15 ms per chunk) and
measures only after that ramp and one more second (every client's first answer
done), with warm connections and caches: steady load, as 50 independent users
would offer it. That is the default; ``--stagger 0`` is the
earlier in-step measurement, ``--stagger 0,1`` runs both, alternating.

``--lag`` adds what a latency needs explained on a shared 2-core machine: the
event loops' lag (a 5 ms timer's lateness) in each gateway and in the load
generator; the time each process was runnable but had no CPU
(``runq_wait_ms_per_s``, from schedstat); CPU per request of the load generator
and of Redis; whether every TCP socket has ``TCP_NODELAY``; and the lean
upstream pool's counters (requests that queued for a connection, new
connections and the time they took).

With ``--interleave`` (concurrency 1 only) the targets instead take turns request
by request on one keep-alive connection each, so that a load that moves within
seconds (a shared machine) weighs on every target alike: the fair way to read a
before/after difference of a millisecond.

Output: a Markdown table on stdout and ``--json`` (see docs/performance.md).
"""

# ruff: noqa: S603 - it starts its own child processes, with fixed argument lists

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PY = sys.executable
ALIAS = "bench-chat"
UPSTREAM_MODEL = "fake-model"
PROMPT = [{"role": "user", "content": "東京の天気を一文で教えてください。"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (and its reaped children), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[11..14] = utime, stime, cutime, cstime (man 5 proc, counted after the comm field)
    return sum(int(x) for x in fields[11:15]) / ticks


def runq_wait_seconds(pid: int) -> float:
    """Time ``pid``'s threads spent runnable but waiting for a CPU (``/proc/PID/task/*/schedstat``).

    On a shared 2-core machine this is the part of a process's latency that is
    nobody's code: the scheduler had no free core for it.
    """
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return total / 1e9


def redis_pid() -> int | None:
    """The pid of the ``redis-server`` listening on ``REDIS_URL``'s port (the devstack's), if found."""
    port = os.environ.get("REDIS_URL", "").rsplit(":", 1)[-1].split("/", 1)[0]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # redis-server rewrites its title to "<path>/redis-server <host>:<port>"
        words = b" ".join(argv).split()
        if (
            words
            and b"redis-server" in words[0]
            and f":{port}".encode() in [w[w.rfind(b":") :] for w in words]
        ):
            return int(pid)
    return None


def pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` onto ``cpu`` only."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), {cpu})


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"port {port} did not open")


# --- Child modes ----------------------------------------------------------------------------


def nodelay_counts() -> tuple[int, int]:
    """(TCP sockets of this process with ``TCP_NODELAY``, connected TCP sockets): Nagle's check."""
    on = total = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket: socket() did not take the copy
            os.close(fd)
            continue
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            sock.getpeername()  # listening sockets have none
            total += 1
            on += bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        except OSError:
            continue
        finally:
            sock.close()
    return on, total


def serve_upstream(port: int, chunk_delay_ms: float = 0.0, report: str | None = None) -> None:
    """The fake upstream, in this (child) process, until killed (``report``: Nagle check lines)."""
    if report:
        _report_nodelay(report)
    from tests.support.fake_upstream import FakeUpstream, _Handler, _Server

    class Handler(_Handler):
        # Each SSE chunk is its own small write: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK hold chunks back ≈40 ms, for every client alike.
        disable_nagle_algorithm = True

    class Server(_Server):
        request_queue_size = 1024  # the listen backlog: 5 by default, too few at concurrency 200

    fake = FakeUpstream(
        mode="slow_first", first_delay=0.05, tokens=64, model=UPSTREAM_MODEL, delay=chunk_delay_ms / 1000
    )
    fake._server.server_close()
    server = Server(("127.0.0.1", port), Handler)
    server.fake = fake
    server.serve_forever()


def serve_gateway(port: int, lag_file: str, switch_interval: float | None = None) -> None:
    """``gennai.asgi:application`` under uvicorn (as :func:`start_gateway`), with a loop-lag probe.

    Runs in the tree given by the working directory and ``PYTHONPATH`` (a baseline's
    code, not necessarily this file's). The probe's timer lateness is appended to
    ``lag_file`` as ``<perf_counter> <seconds late>`` lines, flushed about once a
    second, so that the load generator can take each phase's share.
    """
    sys.path[:] = [p for p in sys.path if p not in (str(ROOT), str(Path(__file__).parent))]
    sys.path.insert(0, os.getcwd())  # the tree to serve (start_gateway's cwd)
    import uvicorn

    from gennai.asgi import application

    # Does a request wait for an upstream connection (the deployment's cap, FIFO)?
    pool_stats: dict[str, float] = {
        "acquires": 0,
        "queued": 0,
        "connects": 0,
        "connect_ms": 0.0,
        "max_open": 0,
    }
    import importlib.util

    if importlib.util.find_spec("apps.registry.providers.lean_http") is not None:  # not in older trees
        from apps.registry.providers.lean_http import LeanPool

        acquire, connect = LeanPool._acquire, LeanPool._connect

        async def counted_acquire(self: Any) -> Any:
            pool_stats["acquires"] += 1
            if not self.idle and self.open >= self.max_connections:
                pool_stats["queued"] += 1
            conn = await acquire(self)
            pool_stats["max_open"] = max(pool_stats["max_open"], self.open)
            return conn

        async def counted_connect(self: Any) -> Any:
            pool_stats["connects"] += 1
            began = time.perf_counter()
            try:
                return await connect(self)
            finally:
                pool_stats["connect_ms"] += round((time.perf_counter() - began) * 1000, 2)

        LeanPool._acquire = counted_acquire  # type: ignore[method-assign]
        LeanPool._connect = counted_connect  # type: ignore[method-assign]

    # How long the cyclic collector stops the loop, per generation (count, total, longest ms).
    import gc

    gc_stats: dict[int, list[float]] = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}
    gc_began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
            return
        took = (time.perf_counter() - gc_began[0]) * 1000
        stats = gc_stats[info["generation"]]
        stats[0] += 1
        stats[1] += took
        stats[2] = max(stats[2], took)

    gc.callbacks.append(on_gc)
    if switch_interval:
        sys.setswitchinterval(switch_interval)

    async def probe() -> None:
        lags: list[float] = []
        stamps: list[float] = []
        loop = asyncio.get_running_loop()
        with open(lag_file, "a") as out:
            while True:
                due = time.perf_counter() + LAG_INTERVAL
                waiter = loop.create_future()
                loop.call_at(loop.time() + LAG_INTERVAL, _wake, waiter)
                await waiter
                now = time.perf_counter()
                stamps.append(now)
                lags.append(max(now - due, 0.0))
                if now - stamps[0] > 1.0:
                    out.write("".join(f"{t:.6f} {x:.6f}\n" for t, x in zip(stamps, lags, strict=True)))
                    on, total = nodelay_counts()
                    out.write(f"# nodelay {on}/{total}\n")
                    out.write("# pool " + " ".join(f"{k}={v}" for k, v in pool_stats.items()) + "\n")
                    out.write(
                        "# gc "
                        + " ".join(f"gen{g}={n}/{t:.1f}ms/max{m:.1f}ms" for g, (n, t, m) in gc_stats.items())
                        + "\n"
                    )
                    out.flush()
                    stamps.clear()
                    lags.clear()

    tasks: list[asyncio.Task[None]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not tasks:
            tasks.append(asyncio.get_running_loop().create_task(probe()))
        await application(scope, receive, send)

    print(f"gateway code from {sys.modules['gennai.asgi'].__file__}", file=sys.stderr)
    uvicorn.run(
        app, port=port, http="httptools", loop="uvloop", access_log=False, log_level="warning", lifespan="on"
    )


def serve_upstream_uvicorn(port: int, chunk_delay_ms: float = 0.0, report: str | None = None) -> None:
    """The fake's answers (:func:`serve_upstream`), served as vLLM serves them: uvicorn, uvloop, httptools.

    Why: the threaded fake (one Python thread per connection, ``time.sleep`` between
    chunks) costs ≈6 ms of CPU per 64-chunk answer and, at concurrency 50, fifty
    threads contend for the GIL on the two cores the gateway and the load generator
    also use. A model server does not share the gateway's cores, and vLLM's
    OpenAI server is a uvicorn/uvloop process (one event loop, TCP_NODELAY on
    every connection, one ``send`` per SSE chunk) — which is what this is.
    Timing and bytes as the threaded fake: 50 ms to the first byte, 64 content
    chunks ``chunk_delay_ms`` apart, a finish chunk, a usage chunk, ``[DONE]``.
    """
    import uvicorn

    if report:
        _report_nodelay(report)
    delay = chunk_delay_ms / 1000
    tokens = 64

    def frame(payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": UPSTREAM_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] != "POST" or not json.loads(body or b"{}").get("stream"):
            models = json.dumps(
                {"object": "list", "data": [{"id": UPSTREAM_MODEL, "object": "model"}]}
            ).encode()
            status = 200 if scope["method"] == "GET" else 400
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": models})
            return
        await asyncio.sleep(0.05)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i in range(tokens):
            await send(
                {
                    "type": "http.response.body",
                    "body": frame(chunk({"content": f"tok{i} "}, None)),
                    "more_body": True,
                }
            )
            if delay:
                await asyncio.sleep(delay)
        usage = {"prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": 7 + tokens}
        last = {**chunk({}, None), "choices": [], "usage": usage}
        for payload in (frame(chunk({}, "stop")), frame(last), b"data: [DONE]\n\n"):
            await send({"type": "http.response.body", "body": payload, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(
        app, port=port, http="httptools", loop="uvloop", access_log=False, log_level="warning", backlog=1024
    )


def _report_nodelay(report: str) -> None:
    """Append ``# nodelay <on>/<connected>`` to ``report`` every second, from a thread."""
    import threading

    def check() -> None:
        while True:
            time.sleep(1.0)
            on, total = nodelay_counts()
            with open(report, "a") as out:
                out.write(f"# nodelay {on}/{total}\n")

    threading.Thread(target=check, daemon=True).start()


def seed(upstream_url: str, max_concurrency: int) -> None:
    """Register the upstream behind ``bench-chat`` for a ministry and print a new API key."""
    import django

    django.setup()
    from datetime import timedelta

    from django.utils import timezone

    from apps.gateway.services import api_key_create
    from apps.tenancy.models import Ministry
    from tests.support.registry import Upstream, register_alias

    ministry, _ = Ministry.objects.get_or_create(
        code="bench", defaults={"name_ja": "ベンチ省", "name_en": "Bench Ministry"}
    )
    from apps.registry.models import Alias

    if not Alias.objects.filter(name=ALIAS).exists():
        registered = register_alias(
            upstreams=[Upstream(upstream_url, served_model_name=UPSTREAM_MODEL, name="bench-dep")],
            ministries=[ministry],
            name=ALIAS,
        )
        # The deployment's concurrency limit caps the gateway's connections to it (2×):
        # by default above the highest concurrency measured, as the direct path has none.
        from apps.registry.services import deployment_save

        deployment_save(actor=None, deployment=registered.deployments[0], max_concurrency=max_concurrency)
    _key, plaintext = api_key_create(
        actor=None,
        ministry=ministry,
        name="bench",
        max_level=2,
        expires_at=timezone.now() + timedelta(days=1),
    )
    print(plaintext)


# --- Load generator -------------------------------------------------------------------------


@dataclass
class Sample:
    ttft: float
    total: float
    start: float = 0.0  # time.perf_counter() when the request was written


@dataclass
class Target:
    name: str
    port: int
    path: str
    model: str
    pid: int
    key: str = ""
    lag_file: Path | None = None


@dataclass
class Phase:
    target: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    server_cpu: float = 0.0
    upstream_cpu: float = 0.0
    client_cpu: float = 0.0  # this process (the load generator)
    # Seconds the processes waited for a CPU while runnable during the phase (schedstat).
    redis_cpu: float = 0.0
    server_wait: float = 0.0
    upstream_wait: float = 0.0
    client_wait: float = 0.0
    began: float = 0.0  # time.perf_counter() at the phase's start
    client_lag: list[float] = field(default_factory=list)  # this loop's timer lateness, seconds
    server_lag: list[float] = field(default_factory=list)  # the gateway loop's (``--lag``)
    client_nodelay: tuple[int, int] = (0, 0)  # (with TCP_NODELAY, connected TCP sockets), mid-phase


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for chunked SSE and JSON.

    The response is read in whatever pieces the socket delivers and parsed from a
    buffer, not with one ``readuntil``/``readexactly`` await per chunk: at
    concurrency 50 the load generator shares the machine's two cores with the
    servers it measures, and an await per chunk cost it ≈5 ms of CPU per answer.
    TTFT is taken when the piece holding the first ``data:`` frame is parsed.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _more(self, buf: bytes) -> bytes:
        assert self.reader is not None
        data = await self.reader.read(65536)
        if not data:
            raise asyncio.IncompleteReadError(buf, None)
        return buf + data

    async def request(self, request: bytes) -> Sample:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        start = time.perf_counter()
        self.writer.write(request)
        buf = b""
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf = await self._more(buf)
        head, buf = buf[: end + 4], buf[end + 4 :]
        status = int(head.split(b" ", 2)[1])
        lower = head.lower()
        ttft = 0.0
        body = b""
        if b"transfer-encoding: chunked" in lower:
            pos = 0
            done = False
            while not done:
                while True:  # every complete chunk in the buffer
                    line_end = buf.find(b"\r\n", pos)
                    if line_end < 0:
                        break
                    size = int(buf[pos:line_end].split(b";")[0], 16)
                    if size == 0:
                        if len(buf) >= line_end + 4:  # the empty trailer's CRLF
                            done = True
                        break
                    chunk_end = line_end + 2 + size
                    if len(buf) < chunk_end + 2:
                        break
                    data = buf[line_end + 2 : chunk_end]
                    if not ttft and b"data:" in data:
                        ttft = time.perf_counter() - start
                    body = body[-64:] + data
                    pos = chunk_end + 2
                if not done:
                    buf = await self._more(buf[pos:])
                    pos = 0
        else:
            length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            while len(buf) < length:
                buf = await self._more(buf)
            body = buf[:length]
            ttft = time.perf_counter() - start
        total = time.perf_counter() - start
        if b"connection: close" in lower:
            self.close()
        if status != 200 or b"[DONE]" not in body:
            raise RuntimeError(f"HTTP {status}: {body[-200:]!r}")
        return Sample(ttft=ttft, total=total, start=start)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build_request(target: Target) -> bytes:
    body = json.dumps({"model": target.model, "messages": PROMPT, "stream": True}).encode()
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    if target.key:
        head += f"Authorization: Bearer {target.key}\r\n"
    return head.encode() + b"\r\n" + body


LAG_INTERVAL = 0.005  # seconds between the loop-lag probe's timers


async def probe_lag(lags: list[float], interval: float = LAG_INTERVAL) -> None:
    """Append how late each ``interval`` timer fired (seconds) until cancelled: the loop's stall time."""
    loop = asyncio.get_running_loop()
    while True:
        due = time.perf_counter() + interval
        waiter = loop.create_future()
        loop.call_at(loop.time() + interval, _wake, waiter)
        await waiter
        lags.append(max(time.perf_counter() - due, 0.0))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # cancelled with the phase's end
        waiter.set_result(None)


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def run_phase(
    target: Target,
    concurrency: int,
    seconds: float,
    upstream_pid: int,
    *,
    stagger: float = 0.0,
    lag: bool = False,
) -> Phase:
    """``concurrency`` closed-loop clients for ``seconds``.

    ``stagger``: client i sends its first request ``i × stagger / concurrency`` seconds
    after the start instead of all at once, and only what starts ``2 × stagger`` seconds
    after the start is measured (the ramp, then one answer time: every client's first
    request, which opens its connections and whose end meets the gateway's caches
    cold after the other targets' phases, is left out, and so is the CPU spent before;
    see ``--stagger``).
    Without it, all clients start at once and everything is measured (as before).
    """
    phase = Phase(target=target.name, concurrency=concurrency)
    request = build_request(target)
    pids = (target.pid, upstream_pid, os.getpid())
    redis = redis_pid() if lag else None
    before: dict[str, Any] = {}

    def snapshot() -> None:
        before["server"], before["upstream"] = cpu_seconds(target.pid), cpu_seconds(upstream_pid)
        before["client"] = own_cpu()
        before["waits"] = [runq_wait_seconds(pid) for pid in pids]
        before["redis"] = cpu_seconds(redis) if redis else 0.0
        before["at"] = phase.began = time.perf_counter()

    start = time.perf_counter()
    # After the ramp *and* every client's first answer: the first answers also end in
    # the gateway's colder paths (caches that expired while other targets ran, usage
    # settled for the first time in seconds) — a restart's cost, not a steady load's.
    measure_from = start + 2 * stagger
    deadline = measure_from + seconds
    snapshot()
    lags: list[float] = []
    prober = asyncio.create_task(probe_lag(lags)) if lag else None

    async def client(index: int) -> None:
        conn = Connection(target.port)
        if stagger:
            await asyncio.sleep(index * stagger / concurrency)
        try:
            while time.perf_counter() < deadline:
                try:
                    sample = await conn.request(request)
                    if sample.start >= measure_from:
                        phase.samples.append(sample)
                except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError) as exc:
                    phase.errors += 1
                    if phase.errors <= 3:
                        print(f"  {target.name}: {exc}", file=sys.stderr)
                    conn.close()
                    await asyncio.sleep(0.05)
        finally:
            conn.close()

    async def measure() -> None:
        if stagger:
            await asyncio.sleep(2 * stagger)
            lags.clear()
            snapshot()
        await asyncio.sleep(seconds / 2)
        phase.client_nodelay = nodelay_counts()

    checker = asyncio.create_task(measure())
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    if prober is not None:
        prober.cancel()
    await checker
    phase.client_lag = lags
    phase.elapsed = time.perf_counter() - before["at"]
    phase.server_cpu = cpu_seconds(target.pid) - before["server"]
    phase.upstream_cpu = cpu_seconds(upstream_pid) - before["upstream"]
    phase.client_cpu = own_cpu() - before["client"]
    waits = [runq_wait_seconds(pid) - b for pid, b in zip(pids, before["waits"], strict=True)]
    phase.server_wait, phase.upstream_wait, phase.client_wait = waits
    phase.redis_cpu = cpu_seconds(redis) - before["redis"] if redis else 0.0
    return phase


async def run_interleaved(targets: list[Target], seconds: float, upstream_pid: int) -> list[Phase]:
    """Concurrency 1, one request per target in turn (the order rotating each cycle).

    Why: on a shared machine the load moves within seconds, and phases of a few
    seconds per target (A B A B) can land in different weather. Alternating
    request by request gives every target the same conditions, so the added
    time to first token of one target over another is a fair difference even
    when the absolute numbers are inflated by others' work. Server CPU is the
    target's own process (it serves nothing else meanwhile); upstream CPU is
    shared out per request.
    """
    phases = [Phase(target=t.name, concurrency=1) for t in targets]
    requests = [build_request(t) for t in targets]
    conns = [Connection(t.port) for t in targets]
    server_before = [cpu_seconds(t.pid) for t in targets]
    upstream_before = cpu_seconds(upstream_pid)
    start = time.perf_counter()
    deadline = start + seconds
    cycle = 0
    try:
        while time.perf_counter() < deadline:
            for offset in range(len(targets)):
                i = (cycle + offset) % len(targets)
                try:
                    phases[i].samples.append(await conns[i].request(requests[i]))
                except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError) as exc:
                    phases[i].errors += 1
                    if phases[i].errors <= 3:
                        print(f"  {targets[i].name}: {exc}", file=sys.stderr)
                    conns[i].close()
            cycle += 1
    finally:
        for conn in conns:
            conn.close()
    elapsed = time.perf_counter() - start
    done = sum(len(p.samples) for p in phases) or 1
    upstream_cpu = cpu_seconds(upstream_pid) - upstream_before
    for phase, target, before in zip(phases, targets, server_before, strict=True):
        phase.elapsed = elapsed * len(phase.samples) / done  # its share of the wall time
        phase.upstream_cpu = upstream_cpu * len(phase.samples) / done
        # "direct" is the upstream itself, which served every target meanwhile.
        own = target.pid != upstream_pid
        phase.server_cpu = cpu_seconds(target.pid) - before if own else phase.upstream_cpu
    return phases


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def summarize(phases: list[Phase]) -> dict[str, Any]:
    samples = [s for p in phases for s in p.samples]
    done = len(samples)
    if not done:
        return {"requests": 0, "errors": sum(p.errors for p in phases)}
    ttft = [s.ttft * 1000 for s in samples]
    total = [s.total * 1000 for s in samples]
    elapsed = sum(p.elapsed for p in phases)
    return {
        "requests": done,
        "errors": sum(p.errors for p in phases),
        "req_per_s": round(done / elapsed, 1),
        "ttft_ms": {f"p{q}": round(percentile(ttft, q / 100), 1) for q in (50, 95, 99)},
        "total_ms": {f"p{q}": round(percentile(total, q / 100), 1) for q in (50, 95, 99)},
        "server_cpu_ms_per_req": round(sum(p.server_cpu for p in phases) * 1000 / done, 2),
        "upstream_cpu_ms_per_req": round(sum(p.upstream_cpu for p in phases) * 1000 / done, 2),
        "client_cpu_ms_per_req": round(sum(p.client_cpu for p in phases) * 1000 / done, 2),
        "redis_cpu_ms_per_req": round(sum(p.redis_cpu for p in phases) * 1000 / done, 2),
        # Milliseconds per second of the phase that each process was runnable without a CPU.
        "runq_wait_ms_per_s": {
            "server": round(sum(p.server_wait for p in phases) * 1000 / elapsed, 1),
            "upstream": round(sum(p.upstream_wait for p in phases) * 1000 / elapsed, 1),
            "client": round(sum(p.client_wait for p in phases) * 1000 / elapsed, 1),
        },
        "ttft_median_ms": round(statistics.median(ttft), 1),
        # Median number of other requests of the same phase written within ±5 ms of each
        # one: ≈0.5 for 50 req/s arriving at random, dozens when the clients move in step.
        "crowd_5ms": statistics.median(_crowds(phases, 0.005)),
        "client_nodelay": [p.client_nodelay for p in phases if p.client_nodelay != (0, 0)][:1],
        **_lag_summary("client_lag_ms", [x for p in phases for x in p.client_lag]),
        **_lag_summary("server_lag_ms", [x for p in phases for x in p.server_lag]),
    }


def _crowds(phases: list[Phase], window: float) -> list[int]:
    import bisect

    crowds = []
    for phase in phases:
        starts = sorted(s.start for s in phase.samples)
        for t in starts:
            crowds.append(
                bisect.bisect_right(starts, t + window) - bisect.bisect_left(starts, t - window) - 1
            )
    return crowds or [0]


def _lag_summary(name: str, lags: list[float]) -> dict[str, Any]:
    if not lags:
        return {}
    ms = [x * 1000 for x in lags]
    return {
        name: {
            "p50": round(percentile(ms, 0.5), 2),
            "p99": round(percentile(ms, 0.99), 2),
            "max": round(max(ms), 1),
        }
    }


# --- Orchestration --------------------------------------------------------------------------


def start_gateway(
    port: int, tree: Path, env: dict[str, str], lag_file: Path | None = None, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """``uvicorn gennai.asgi:application`` (httptools, uvloop, one process) from ``tree``.

    With ``lag_file``, through :func:`serve_gateway` (the same server and settings, plus
    the loop-lag probe).
    """
    if lag_file is not None:
        cmd = [PY, str(Path(__file__).resolve()), "--serve-gateway", str(port), "--lag-file", str(lag_file)]
        cmd += extra or []
    else:
        cmd = [
            PY, "-m", "uvicorn", "gennai.asgi:application", "--port", str(port),
            "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=tree, env={**env, "PYTHONPATH": str(tree)}, start_new_session=True)


def read_lags(lag_file: Path | None, began: float, ended: float) -> list[float]:
    """The gateway loop's timer lateness (seconds) between ``began`` and ``ended``."""
    if lag_file is None or not lag_file.exists():
        return []
    lags = []
    for line in lag_file.read_text().splitlines():
        if line.startswith("#"):
            continue
        stamp, _, late = line.partition(" ")
        if began <= float(stamp) <= ended:
            lags.append(float(late))
    return lags


def start_litellm(venv: Path, upstream_port: int, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {UPSTREAM_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-upstream\n"
        "general_settings:\n"
        "  master_key: sk-bench-master\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "DISABLE_ADMIN_UI": "True",
    }
    # LiteLLM would try to use ours: our database, and (REDIS_URL) our Redis, where its
    # traffic made the gateway's admission time out (every /v1 request took 2.5 s).
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
        env.pop(name, None)
    exe = venv / "bin" / "litellm"
    return subprocess.Popen(
        [str(exe), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,10,50,200")
    parser.add_argument("--seconds", type=float, default=4.0, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--max-concurrency", type=int, default=512, help="of the bench deployment (2× = upstream connections)"
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=0.0,
        help="the fake upstream waits this long between content chunks (e.g. 15: ≈1 s per answer)",
    )
    parser.add_argument(
        "--stagger",
        default="1",
        help="spread the clients' first requests over this many seconds instead of sending all at once; "
        "several (e.g. 0,1) run as separate rows, alternating",
    )
    parser.add_argument(
        "--lag",
        action="store_true",
        help="probe the event loops' lag (a timer every 5 ms) in the gateways and in the load generator",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="gateways on CPU 0, the fake upstream, the load generator and Redis on CPU 1",
    )
    parser.add_argument(
        "--samples", type=Path, help="write every request's start, TTFT and total (JSON lines)"
    )
    parser.add_argument(
        "--upstream",
        choices=("uvicorn", "threaded"),
        default="uvicorn",
        help="the fake model server: uvicorn/uvloop as vLLM (default), or the test suite's threaded one",
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="with --lag: sys.setswitchinterval(S) in the 'gennai' gateway only (the GIL hand-over time)",
    )
    parser.add_argument("--lag-file", help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help="record the gateway with py-spy into this SVG")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="concurrency 1 only: alternate the targets request by request (fair under a moving load)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the gateway from this source tree (e.g. `git archive <commit>`), as 'baseline'",
    )
    args = parser.parse_args()
    if args.serve_upstream:
        serve = serve_upstream if args.upstream == "threaded" else serve_upstream_uvicorn
        serve(args.serve_upstream, args.chunk_delay_ms, args.lag_file)
        return 0
    if args.seed:
        seed(args.seed, args.max_concurrency)
        return 0
    if args.serve_gateway:
        serve_gateway(args.serve_gateway, args.lag_file, args.switch_interval)
        return 0
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        raise SystemExit("needs DATABASE_URL and REDIS_URL: run through `python -m gennai.devstack env --`")

    if args.samples:
        args.samples.write_text("")
    # The load generator's loop: uvloop, as the servers it measures (asyncio's own loop took
    # ≈5 ms of this process's CPU per 67-chunk answer, on the cores the servers need).
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gennai.settings.dev",
        "GENNAI_DEBUG": "0",
        "GENNAI_LOG_LEVEL": "WARNING",
    }
    children: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="gennai-bench-"))
    try:
        up_port = free_port()
        up_cmd = [
            PY,
            __file__,
            "--serve-upstream",
            str(up_port),
            "--chunk-delay-ms",
            str(args.chunk_delay_ms),
        ]
        up_cmd += ["--upstream", args.upstream]
        if args.lag:
            up_cmd += ["--lag-file", str(workdir / "nodelay-upstream.txt")]
        upstream = subprocess.Popen(
            up_cmd,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        children.append(upstream)
        wait_port(up_port, upstream)
        subprocess.run([PY, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
        key = (
            subprocess.run(
                [
                    PY,
                    __file__,
                    "--seed",
                    f"http://127.0.0.1:{up_port}",
                    "--max-concurrency",
                    str(args.max_concurrency),
                ],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        gw_port = free_port()
        gw_lag = workdir / "lag-gennai.txt" if args.lag else None
        extra = ["--switch-interval", str(args.switch_interval)] if args.switch_interval else []
        gateway = start_gateway(gw_port, ROOT, env, gw_lag, extra)
        children.append(gateway)
        wait_port(gw_port, gateway)
        targets = [
            Target("direct", up_port, "/v1/chat/completions", UPSTREAM_MODEL, upstream.pid),
            Target("gennai", gw_port, "/v1/chat/completions", ALIAS, gateway.pid, key=key, lag_file=gw_lag),
        ]
        if args.baseline:
            # The same database, deployment and key, served by an older tree's code: a
            # before/after comparison inside one run (A B A B), not across runs.
            base_port = free_port()
            base_lag = workdir / "lag-baseline.txt" if args.lag else None
            baseline = start_gateway(base_port, args.baseline.resolve(), env, base_lag)
            children.append(baseline)
            wait_port(base_port, baseline)
            path = "/v1/chat/completions"
            targets.insert(
                1, Target("baseline", base_port, path, ALIAS, baseline.pid, key=key, lag_file=base_lag)
            )
        litellm_venv = os.environ.get("LITELLM_VENV")
        if litellm_venv:
            ll_port = free_port()
            litellm = start_litellm(Path(litellm_venv), up_port, ll_port, workdir)
            children.append(litellm)
            wait_port(ll_port, litellm, timeout=180)
            path = "/v1/chat/completions"
            master = "sk-bench-master"
            targets.append(Target("litellm", ll_port, path, UPSTREAM_MODEL, litellm.pid, key=master))
        if args.pin:
            # Gateways on CPU 0; the model server, the load generator and Redis on CPU 1: in
            # production they do not share the gateway's cores (other people's work still may).
            gateways = {t.pid for t in targets} - {upstream.pid}
            for pid in gateways:
                pin(pid, 0)
            for other in (upstream.pid, os.getpid(), redis_pid()):
                if other:
                    pin(other, 1)
        # Warm-up: connections, caches, the snapshot, the key cache.
        for target in targets:
            asyncio.run(run_phase(target, 4, 1.5, upstream.pid))
        spy = None
        if args.profile:
            spy_cmd = [str(Path(PY).parent / "py-spy"), "record", "-o", str(args.profile), "-f", "raw"]
            spy_cmd += ["-p", str(gateway.pid), "-r", "200", "--nonblocking"]
            spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL)
        results: dict[str, dict[str, Any]] = {}
        concurrencies = [1] if args.interleave else [int(c) for c in args.concurrency.split(",")]
        for concurrency in concurrencies:
            staggers = [float(x) for x in args.stagger.split(",")]
            runs = [
                (t, stagger, t.name if len(staggers) == 1 else f"{t.name} stagger={stagger:g}")
                for stagger in staggers
                for t in targets
            ]
            phases: dict[str, list[Phase]] = {label: [] for _t, _s, label in runs}
            for _round in range(args.rounds):
                if args.interleave:
                    seconds = args.seconds * len(targets)  # as long as the A B … phases together
                    for phase in asyncio.run(run_interleaved(targets, seconds, upstream.pid)):
                        phases[phase.target].append(phase)
                    continue
                for target, stagger, label in runs:
                    phase = asyncio.run(
                        run_phase(
                            target, concurrency, args.seconds, upstream.pid, stagger=stagger, lag=args.lag
                        )
                    )
                    phases[label].append(phase)
            if args.lag:
                time.sleep(1.2)  # the gateways write their probe's lines about once a second
                for target, _stagger, label in runs:
                    for phase in phases[label]:
                        phase.server_lag = read_lags(
                            target.lag_file, phase.began, phase.began + phase.elapsed
                        )
            if args.samples:
                with args.samples.open("a") as out:
                    for name, done in phases.items():
                        for phase in done:
                            for sample in phase.samples:
                                row = {
                                    "target": name,
                                    "concurrency": concurrency,
                                    "phase_began": phase.began,
                                    "start": round(sample.start - phase.began, 6),
                                    "ttft": round(sample.ttft, 6),
                                    "total": round(sample.total, 6),
                                }
                                out.write(json.dumps(row) + "\n")
            for name, done in phases.items():
                row = {"target": name, "concurrency": concurrency, **summarize(done)}
                results[f"{name}@{concurrency}"] = row
                print(json.dumps(row), file=sys.stderr)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        if args.lag:
            for report in sorted(workdir.glob("*.txt")):
                checks = [line for line in report.read_text().splitlines() if line.startswith("# nodelay")]
                # The check taken with the most connections open (mid-phase).
                busiest = max(checks, key=lambda line: int(line.rsplit("/", 1)[1]), default="no check")
                print(f"{report.name}: {busiest} (TCP_NODELAY / connected)", file=sys.stderr)
                lines = report.read_text().splitlines()
                pools = [line for line in lines if line.startswith("# pool")]
                if pools:
                    print(f"{report.name}: {pools[-1]} (lean pool, since start-up)", file=sys.stderr)
                gcs = [line for line in lines if line.startswith("# gc")]
                if gcs:
                    print(
                        f"{report.name}: {gcs[-1]} (collections/total/longest, since start-up)",
                        file=sys.stderr,
                    )
        print(table(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGTERM)  # each child leads its own session
                except (ProcessLookupError, PermissionError):
                    child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| target | conc. | req/s | TTFT p50 / p95 / p99 ms | total p50 / p95 / p99 ms "
        "| server CPU ms/req | upstream CPU ms/req | errors |",
        "|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for row in results.values():
        if not row.get("requests"):
            lines.append(f"| {row['target']} | {row['concurrency']} | 0 | – | – | – | – | {row['errors']} |")
            continue
        t, tot = row["ttft_ms"], row["total_ms"]
        lines.append(
            f"| {row['target']} | {row['concurrency']} | {row['req_per_s']} "
            f"| {t['p50']} / {t['p95']} / {t['p99']} | {tot['p50']} / {tot['p95']} / {tot['p99']} "
            f"| {row['server_cpu_ms_per_req']} | {row['upstream_cpu_ms_per_req']} | {row['errors']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
