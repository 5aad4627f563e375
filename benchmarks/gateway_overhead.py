"""What ``/v1`` costs on top of the model server: TTFT, throughput and CPU per request.

Run it with ``make bench-gateway`` (embedded PostgreSQL and Redis via
``gennai.devstack env``), or by hand with ``DATABASE_URL``/``REDIS_URL`` set::

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/gateway_overhead.py

What it starts, each in its own process:

* the fake upstream of the test suite (``tests/support/fake_upstream.py``):
  50 ms to the first byte, then 64 content chunks, a finish chunk, a usage chunk
  and ``[DONE]`` (``--chunk-delay-ms N``: N ms between content chunks, as a model
  server that emits tokens at a realistic pace, so that a high concurrency stays
  below saturation);
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
in that phase. The load generator is a minimal HTTP/1.1 client on asyncio
streams, so that it takes as little of the machine's CPU as possible.

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


def serve_upstream(port: int, chunk_delay_ms: float = 0.0) -> None:
    """The fake upstream, in this (child) process, until killed."""
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


@dataclass
class Target:
    name: str
    port: int
    path: str
    model: str
    pid: int
    key: str = ""


@dataclass
class Phase:
    target: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    server_cpu: float = 0.0
    upstream_cpu: float = 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for chunked SSE and JSON."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, request: bytes) -> Sample:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        start = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        lower = head.lower()
        ttft = 0.0
        body = b""
        if b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                data = await self.reader.readexactly(size + 2)
                if not ttft and b"data:" in data:
                    ttft = time.perf_counter() - start
                body = body[-64:] + data[:-2]
        else:
            length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            body = await self.reader.readexactly(length)
            ttft = time.perf_counter() - start
        total = time.perf_counter() - start
        if b"connection: close" in lower:
            self.close()
        if status != 200 or b"[DONE]" not in body:
            raise RuntimeError(f"HTTP {status}: {body[-200:]!r}")
        return Sample(ttft=ttft, total=total)

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


async def run_phase(target: Target, concurrency: int, seconds: float, upstream_pid: int) -> Phase:
    phase = Phase(target=target.name, concurrency=concurrency)
    request = build_request(target)
    server_before, upstream_before = cpu_seconds(target.pid), cpu_seconds(upstream_pid)
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        conn = Connection(target.port)
        try:
            while time.perf_counter() < deadline:
                try:
                    phase.samples.append(await conn.request(request))
                except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError) as exc:
                    phase.errors += 1
                    if phase.errors <= 3:
                        print(f"  {target.name}: {exc}", file=sys.stderr)
                    conn.close()
                    await asyncio.sleep(0.05)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    phase.elapsed = time.perf_counter() - start
    phase.server_cpu = cpu_seconds(target.pid) - server_before
    phase.upstream_cpu = cpu_seconds(upstream_pid) - upstream_before
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
        "ttft_median_ms": round(statistics.median(ttft), 1),
    }


# --- Orchestration --------------------------------------------------------------------------


def start_gateway(port: int, tree: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``uvicorn gennai.asgi:application`` (httptools, uvloop, one process) from ``tree``."""
    return subprocess.Popen(
        [
            PY, "-m", "uvicorn", "gennai.asgi:application", "--port", str(port),
            "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
        ],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        start_new_session=True,
    )  # fmt: skip


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
    env.pop("DATABASE_URL", None)  # LiteLLM would try to use ours
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
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
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
        serve_upstream(args.serve_upstream, args.chunk_delay_ms)
        return 0
    if args.seed:
        seed(args.seed, args.max_concurrency)
        return 0
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        raise SystemExit("needs DATABASE_URL and REDIS_URL: run through `python -m gennai.devstack env --`")

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
        upstream = subprocess.Popen(
            [PY, __file__, "--serve-upstream", str(up_port), "--chunk-delay-ms", str(args.chunk_delay_ms)],
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
        gateway = start_gateway(gw_port, ROOT, env)
        children.append(gateway)
        wait_port(gw_port, gateway)
        targets = [
            Target("direct", up_port, "/v1/chat/completions", UPSTREAM_MODEL, upstream.pid),
            Target("gennai", gw_port, "/v1/chat/completions", ALIAS, gateway.pid, key=key),
        ]
        if args.baseline:
            # The same database, deployment and key, served by an older tree's code: a
            # before/after comparison inside one run (A B A B), not across runs.
            base_port = free_port()
            baseline = start_gateway(base_port, args.baseline.resolve(), env)
            children.append(baseline)
            wait_port(base_port, baseline)
            path = "/v1/chat/completions"
            targets.insert(1, Target("baseline", base_port, path, ALIAS, baseline.pid, key=key))
        litellm_venv = os.environ.get("LITELLM_VENV")
        if litellm_venv:
            ll_port = free_port()
            litellm = start_litellm(Path(litellm_venv), up_port, ll_port, workdir)
            children.append(litellm)
            wait_port(ll_port, litellm, timeout=180)
            path = "/v1/chat/completions"
            master = "sk-bench-master"
            targets.append(Target("litellm", ll_port, path, UPSTREAM_MODEL, litellm.pid, key=master))
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
            phases: dict[str, list[Phase]] = {t.name: [] for t in targets}
            for _round in range(args.rounds):
                if args.interleave:
                    seconds = args.seconds * len(targets)  # as long as the A B … phases together
                    for phase in asyncio.run(run_interleaved(targets, seconds, upstream.pid)):
                        phases[phase.target].append(phase)
                    continue
                for target in targets:
                    phase = asyncio.run(run_phase(target, concurrency, args.seconds, upstream.pid))
                    phases[target.name].append(phase)
            for name, done in phases.items():
                row = {"target": name, "concurrency": concurrency, **summarize(done)}
                results[f"{name}@{concurrency}"] = row
                print(json.dumps(row), file=sys.stderr)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
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
