"""Admission (reserve + settle) latency per request under N-way concurrency, on one event loop.

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/admission.py \\
        [--concurrency 200] [--requests 20000] [--hold-ms 0,50,1000] [--warmup 2000]
        [--limits every|typical] [--floor] [--json out.json] [--baseline DIR [--rounds 3]]

It configures Django with ``gennai.settings.test``, creates and migrates a
scratch database (``bench_gennai_admission``) in owner mode, and creates one
ministry with 5 teams and 40 users, each user in one team. ``--limits every``
(the worst case) puts limits on every counter a request touches (platform,
ministry, team, user; all aliases and the alias: 8 counters): token and yen
budgets, RPM, TPM and max concurrent. ``--limits typical`` sets a ministry token
budget and a default per-user token budget and RPM (2 counters). All limits are
far above what the run uses, so every request is admitted.

With a hold time, each coroutine starts after a random part of it and holds
0.5–1.5 × the hold time, so the requests in flight are spread out (as real
arrivals are) rather than 200 arriving in the same instant; ``--hold-ms 0``
is the closed-loop saturation case, whose latency is the queue (Little's law:
200 in flight ÷ throughput).

Then ``--concurrency`` coroutines on one asyncio event loop (the web process's
situation) each repeat: ``areserve`` → hold for ``--hold-ms`` (the upstream's
time; 0 = back to back, the saturation case) → ``asettle``, until
``--requests`` requests are done. Reported per hold time: reserve, settle and
reserve+settle latency (wall time the request waited for admission) p50 / p99
/ max, requests per second, the process CPU time per request (client side;
Redis runs in its own process), Redis's time per script two ways (``INFO
commandstats``: wall time inside EVALSHA; and the CPU time of Redis's main
thread per script from /proc when Redis runs here, which includes reading and
answering the command and does not grow while Redis waits for a CPU), and the
garbage collector's pauses during the run. Like the web process
(``apps/gateway/asgi.py``), the start-up heap is frozen out of the collector
before measuring (``--no-gc-freeze`` to keep it in), the loop is uvloop, which
uvicorn serves with (``--loop asyncio`` to compare), and database hops (the
limits cache's version checks) go through the web process's connection pool
(``gennai/settings/base.py``; ``--no-pool`` opens a connection per hop, as the
test settings do, which holds the GIL for milliseconds every check interval).
Keys live under a scratch prefix, deleted at the end.

The floor in the same run: ``--floor`` also measures, per hold time, requests
that make the same two awaited round trips with no admission work in them: two
``EVALSHA`` of a script that only returns 1, sent by ``PipelinedScript`` over
the loop's own admission client (``apps.quotas.admission_redis.async_scripts``,
the multiplexed connection of ``apps/quotas/redis_pipe.py``), with the same
arrival pattern, concurrency, hold times, event loop and frozen heap. The runs
are interleaved per hold time as floor, admission, floor (each floor run does
half of ``--requests``; their samples are pooled), so the floor brackets the
admission run in time and both see the same machine state. Reported next to
admission's rows: the floor's first and second round trip and its pair (p50 /
p99 / max), and admission's pair p50 / p99 / max divided by the floor's.

A/B on a shared machine: ``--baseline DIR`` (a checkout of another commit, e.g.
``git archive <commit> | tar -x -C DIR``) runs this script on that tree and on
this one alternately, ``--rounds`` times each, one process per run, and prints
every run with the load average around it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# The floor's requests run this instead of admit and settle: the same command (EVALSHA), no work.
FLOOR_LUA = "return 1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--hold-ms", default="0,50,1000", help="comma-separated upstream hold times")
    parser.add_argument(
        "--limits",
        choices=["every", "typical"],
        default="every",
        help="every: limits on all 8 counters of a request (worst case); "
        "typical: a ministry budget and a default per-user budget + RPM (2 counters)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure, interleaved per hold time (floor, admission, floor), requests making two "
        "EVALSHA of a script that returns 1 over the same client: the floor of two awaited round trips",
    )
    parser.add_argument("--database", default="bench_gennai_admission")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git archive <commit> | tar -x -C DIR`): run its benchmark and this "
        "one alternately, --rounds times each, in one session, and print both (A/B on a shared machine)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --baseline")
    parser.add_argument(
        "--tree", type=Path, help="measure the code of this checkout (default: the one holding this script)"
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop (default: uvloop, which the web process serves with: infra/README.md)",
    )
    parser.add_argument(
        "--pin",
        type=int,
        metavar="CPU",
        help="run this process and the Redis server (when it runs here) on this one CPU: a diagnostic "
        "that takes the cross-CPU wake-up of each round trip out (not how production runs)",
    )
    parser.add_argument(
        "--no-pool",
        action="store_true",
        help="open a database connection per hop as the test settings do, instead of the web "
        "process's connection pool (gennai/settings/base.py)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the start-up heap in the collector (the web process freezes it: apps/gateway/asgi.py)",
    )
    return parser.parse_args()


def setup_django(database: str, tree: Path) -> None:
    sys.path.insert(0, str(tree))
    os.environ["DJANGO_SETTINGS_MODULE"] = "gennai.settings.test"
    os.environ["GENNAI_TEST_DB_NAME"] = database
    import django

    django.setup()


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def fill(every: bool) -> list[Any]:
    """One ministry, 5 teams, 40 users, and their limits; returns the subjects."""
    from apps.accounts.models import User
    from apps.quotas import admission
    from apps.quotas.models import Limit, PlatformLimit
    from apps.tenancy.models import Membership, Ministry, Team, TeamMembership
    from apps.tenancy.scope import ministry_scope

    big = {
        "monthly_tokens": 10**13,
        "monthly_yen": Decimal("1e10"),
        "rpm": 10**9,
        "tpm": 2 * 10**9,
        "max_concurrent": 10**6,
    }
    alias = "standard-chat"
    ministry = Ministry.objects.create(code="bench", name_ja="ベンチ", name_en="Bench")
    aliases = ("", alias) if every else ("",)
    if every:
        for alias_name in aliases:
            PlatformLimit.objects.create(alias_name=alias_name, **big)
    with ministry_scope(ministry_id=ministry.pk):
        teams = [Team.objects.create(code=f"t{i}", name=f"t{i}") for i in range(5)]
        for alias_name in aliases:
            Limit.objects.create(
                level="ministry", alias_name=alias_name, monthly_tokens=big["monthly_tokens"]
            )
            if not every:
                # The default row of the user level: each user has their own budget and RPM.
                Limit.objects.create(level="user", monthly_tokens=10**9, rpm=10**6)
                continue
            for team in teams:
                Limit.objects.create(level="team", team=team, alias_name=alias_name, **big)
        for i in range(40):
            user = User.objects.create(username=f"bench-{i}", subject=f"sub-bench-{i}")
            Membership.objects.create(user=user, ministry=ministry, roles=["staff"])
            TeamMembership.objects.create(team=teams[i % 5], user=user)
            if every:
                for alias_name in aliases:
                    Limit.objects.create(level="user", user=user, alias_name=alias_name, **big)
    subjects = []
    for i, user in enumerate(User.objects.filter(username__startswith="bench-").order_by("pk")):
        subjects.append(
            admission.subject_for_user(ministry_id=ministry.pk, user=user, alias_name=alias, zone="on_prem")
        )
        assert len(subjects[-1].team_ids) == 1, i
    return subjects


# What one request does, made once per coroutine (on the running loop): the first awaited call,
# and the second, which receives what the first returned.
First = Callable[[], Awaitable[Any]]
Second = Callable[[Any], Awaitable[Any]]
Pair = Callable[[int], tuple[First, Second]]
ADMISSION = ("reserve", "settle", "reserve+settle")
FLOOR = ("first", "second", "pair")


def admission_pair(subjects: list[Any]) -> Pair:
    """Admission as a request pays it: ``areserve``, then ``asettle`` of that reservation."""
    from apps.quotas.admission import areserve, asettle

    def for_worker(n: int) -> tuple[First, Second]:
        subject = subjects[n % len(subjects)]

        def reserve() -> Awaitable[Any]:
            return areserve(
                subject=subject,
                prompt_tokens=200,
                max_tokens=800,
                request_id=uuid.uuid4().hex,
                price=Decimal(300),
            )

        def settle(r: Any) -> Awaitable[Any]:
            return asettle(
                reservation=r, prompt_tokens=200, completion_tokens=321, cost_yen=Decimal("0.1563")
            )

        return reserve, settle

    return for_worker


def floor_pair(_n: int) -> tuple[First, Second]:
    """Two awaited round trips with no admission work: ``EVALSHA`` of :data:`FLOOR_LUA`, twice, over
    the client admission uses on this loop (its multiplexed connection) by the same call path."""
    from apps.quotas.admission_redis import async_scripts
    from apps.quotas.redis_pipe import PipelinedScript

    script = PipelinedScript(async_scripts().client, FLOOR_LUA)

    def first() -> Awaitable[Any]:
        return script(args=[])

    def second(_previous: Any) -> Awaitable[Any]:
        return script(args=[])

    return first, second


@dataclass
class Samples:
    """One run's latencies (s) of the first and second call of each request, and its costs."""

    first: list[float] = field(default_factory=list)
    second: list[float] = field(default_factory=list)
    cpu: float = 0.0
    wall: float = 0.0
    gc_pauses: list[float] = field(default_factory=list)


async def drive(pair: Pair, *, concurrency: int, requests: int, hold: float) -> Samples:
    samples = Samples()
    remaining = requests

    async def worker(n: int) -> None:
        nonlocal remaining
        first, second = pair(n)
        jitter = random.Random(n)  # noqa: S311 (spreading arrivals, not a secret)
        if hold:
            # Requests in flight arrive spread out, as real ones do, not in lock-step bursts of N.
            await asyncio.sleep(jitter.uniform(0, hold))
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            r = await first()
            t1 = time.perf_counter()
            if hold:
                await asyncio.sleep(hold * jitter.uniform(0.5, 1.5))
            t2 = time.perf_counter()
            await second(r)
            t3 = time.perf_counter()
            samples.first.append(t1 - t0)
            samples.second.append(t3 - t2)

    started: list[float] = []

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            samples.gc_pauses.append(time.perf_counter() - started.pop())

    gc.callbacks.append(on_gc)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    samples.cpu, samples.wall = time.process_time() - cpu0, time.perf_counter() - wall0
    gc.callbacks.remove(on_gc)
    return samples


def summarize(runs: list[Samples], names: tuple[str, str, str]) -> dict[str, Any]:
    """Latency percentiles over the requests of ``runs`` pooled (``names``: first call, second
    call, both), requests per second and CPU per request over their time together."""
    firsts = [v for run in runs for v in run.first]
    seconds = [v for run in runs for v in run.second]
    pauses = [v for run in runs for v in run.gc_pauses]
    both = sorted(r + s for r, s in zip(firsts, seconds, strict=True))
    wall, cpu = sum(run.wall for run in runs), sum(run.cpu for run in runs)
    out: dict[str, Any] = {
        "requests": len(both),
        "req_per_s": len(both) / wall,
        "cpu_us_per_req": cpu / len(both) * 1e6,
        # The collector's pauses during the run (they stop the event loop, so they reach the p99).
        "gc_pauses": len(pauses),
        "gc_pause_max_ms": max(pauses, default=0.0) * 1e3,
        "gc_pause_total_ms": sum(pauses) * 1e3,
    }
    for name, values in zip(names, (sorted(firsts), sorted(seconds), both), strict=True):
        out[name] = {
            "p50_ms": percentile(values, 0.50) * 1e3,
            "p99_ms": percentile(values, 0.99) * 1e3,
            "max_ms": values[-1] * 1e3,
        }
    return out


def redis_cpu_us(client: Any) -> float | None:
    """CPU time of the Redis server's main thread in µs, when it runs on this machine (the devstack).

    Unlike ``INFO commandstats`` (wall time inside the command), it does not grow while Redis
    waits for a CPU, so it stays comparable on a loaded machine.
    """
    pid = client.info("server").get("process_id")
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1000
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Measured:
    """One measured run and what Redis did during it (``EVALSHA`` calls, their µs, main-thread CPU µs)."""

    samples: Samples
    scripts: int
    script_us: float
    redis_cpu_us: float | None


def measure(
    client: Any, new_loop: Any, pair: Pair, *, concurrency: int, requests: int, hold: float
) -> Measured:
    """``drive`` on a new event loop, with Redis's counters reset before and read after."""
    client.config_resetstat()
    cpu0 = redis_cpu_us(client)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        samples = runner.run(drive(pair, concurrency=concurrency, requests=requests, hold=hold))
    # Server-side time of the scripts (both calls of a request together), independent of the client.
    evalsha = client.info("commandstats").get("cmdstat_evalsha", {})
    cpu1 = redis_cpu_us(client)
    return Measured(
        samples=samples,
        scripts=int(evalsha.get("calls", 0)),
        script_us=float(evalsha.get("usec", 0.0)),
        redis_cpu_us=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
    )


def row_of(runs: list[Measured], names: tuple[str, str, str]) -> dict[str, Any]:
    """``summarize`` of ``runs`` pooled, with Redis's time per script over them."""
    row = summarize([run.samples for run in runs], names)
    scripts = sum(run.scripts for run in runs)
    row["redis_us_per_script"] = sum(run.script_us for run in runs) / scripts if scripts else 0.0
    row["redis_scripts"] = scripts
    cpu = [run.redis_cpu_us for run in runs]
    if scripts and None not in cpu:
        # Everything Redis did (reading, parsing, the scripts, replying) per script.
        row["redis_cpu_us_per_script"] = sum(c for c in cpu if c is not None) / scripts
    return row


def run_ab(args: argparse.Namespace) -> int:
    """This checkout and ``--baseline`` alternately (B A B A …), each in its own process, both
    measured by this script (so both get the same driver, heap handling and statistics)."""
    import subprocess
    import tempfile

    passthrough = [
        *(["--no-gc-freeze"] if args.no_gc_freeze else []),
        *(["--no-pool"] if args.no_pool else []),
        *(["--floor"] if args.floor else []),
        *([f"--pin={args.pin}"] if args.pin is not None else []),
        f"--loop={args.loop}",
        f"--concurrency={args.concurrency}",
        f"--requests={args.requests}",
        f"--warmup={args.warmup}",
        f"--hold-ms={args.hold_ms}",
        f"--limits={args.limits}",
    ]
    trees = {"baseline": args.baseline.resolve(), "this": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                out = Path(tmp) / f"{name}-{round_}.json"
                load = os.getloadavg()[0]
                subprocess.run(  # noqa: S603 (this interpreter, a checkout named on the command line)
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        *passthrough,
                        "--tree",
                        str(tree),
                        "--json",
                        str(out),
                    ],
                    cwd=tree,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                result = json.loads(out.read_text())
                result["load"] = (load, os.getloadavg()[0])
                runs[name].append(result)
    print(f"A/B, {args.rounds} rounds alternating; concurrency {args.concurrency}, limits {args.limits}\n")
    print(
        f"{'hold':>6} {'tree':<9} {'load':>9} {'req/s':>6} {'CPU µs/req':>10} {'Redis µs/scr':>12} "
        f"{'Redis CPU µs':>12} {'GC n/max ms':>11}  "
        f"{'reserve p50/p99':>16} {'settle p50/p99':>16} {'pair p50/p99 ms':>16}"
        + (f" {'floor pair':>16} {'÷ floor p99':>11}" if args.floor else "")
    )
    for hold in runs["this"][0]["results"]:
        for round_ in range(args.rounds):
            for name in trees:
                result = runs[name][round_]
                row = result["results"][hold]
                cpu = row.get("redis_cpu_us_per_script")
                lat = [
                    f"{row[w]['p50_ms']:.3f}/{row[w]['p99_ms']:.3f}"
                    for w in ("reserve", "settle", "reserve+settle")
                ]
                print(
                    f"{hold[5:]:>6} {name:<9} {result['load'][0]:>4.1f}-{result['load'][1]:<4.1f} "
                    f"{row['req_per_s']:>6.0f} {row['cpu_us_per_req']:>10.0f} "
                    f"{row['redis_us_per_script']:>12.1f} "
                    f"{'-' if cpu is None else f'{cpu:.1f}':>12} "
                    f"{row['gc_pauses']:>5}/{row['gc_pause_max_ms']:<5.1f}  "
                    f"{lat[0]:>16} {lat[1]:>16} {lat[2]:>16}"
                    + (
                        f" {row['floor']['pair']['p50_ms']:>7.3f}/{row['floor']['pair']['p99_ms']:<8.3f}"
                        f" {row['pair_ratio_to_floor']['p99_ms']:>10.2f}x"
                        if "floor" in row
                        else ""
                    )
                )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


def main() -> int:
    args = parse_args()
    if args.baseline is not None:
        return run_ab(args)
    setup_django(args.database, (args.tree or ROOT).resolve())
    import redis
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    from apps.quotas import admission, limits
    from apps.tenancy.db import owner_mode

    admission.PREFIX = f"bench:q:{uuid.uuid4().hex[:8]}:"
    with owner_mode():
        config = setup_databases(verbosity=0, interactive=False, keepdb=False)
    results: dict[str, Any] = {}
    if not args.no_pool:
        # As the web process: gennai.settings.test turns the pool off (pytest-django drops its
        # databases under it), so without this every limits-version check of the run would open
        # a new PostgreSQL connection in a thread, holding the GIL the event loop needs.
        connection.close()
        connection.settings_dict["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 20}}
    new_loop: Any = None
    if args.loop == "uvloop":
        import uvloop

        new_loop = uvloop.new_event_loop
    try:
        subjects = fill(args.limits == "every")
        limits.ministry_limits(subjects[0].ministry_id)
        if not args.no_gc_freeze:
            gc.collect()
            gc.freeze()  # as the web process does at start-up (apps/gateway/asgi.py, lifespan)
        client = redis.Redis.from_url(settings.REDIS_URL)
        info = client.info("server")
        if args.pin is not None:
            os.sched_setaffinity(0, {args.pin})
            try:
                os.sched_setaffinity(int(info["process_id"]), {args.pin})
            except OSError as exc:  # Redis on another machine or owned by another user
                print(f"Redis not pinned: {exc}", file=sys.stderr)
        admission_requests = admission_pair(subjects)
        for hold_ms in [float(h) for h in args.hold_ms.split(",")]:
            hold = hold_ms / 1000
            for warm in [admission_requests, *([floor_pair] if args.floor else [])]:
                with asyncio.Runner(loop_factory=new_loop) as runner:
                    runner.run(drive(warm, concurrency=args.concurrency, requests=args.warmup, hold=hold))

            measured = functools.partial(measure, client, new_loop, concurrency=args.concurrency, hold=hold)
            # With --floor: floor, admission, floor; the floor's two halves bracket the admission
            # run in time, so both see the same machine state.
            half = max(1, args.requests // 2)
            before = measured(floor_pair, requests=half) if args.floor else None
            admitted = measured(admission_requests, requests=args.requests)
            after = measured(floor_pair, requests=max(1, args.requests - half)) if args.floor else None
            row = row_of([admitted], ADMISSION)
            if before is not None and after is not None:
                floor_runs = [before, after]
                floor = row["floor"] = row_of(floor_runs, FLOOR)
                # The floor's pair p99 before and after the admission run: how much the machine moved.
                floor["pair_p99_ms_before_after"] = [
                    summarize([run.samples], FLOOR)["pair"]["p99_ms"] for run in floor_runs
                ]
                row["pair_ratio_to_floor"] = {
                    key: row["reserve+settle"][key] / floor["pair"][key]
                    for key in ("p50_ms", "p99_ms", "max_ms")
                }
            results[f"hold_{hold_ms:g}ms"] = row
        keys = list(client.scan_iter(match=admission.PREFIX + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        connection.close()
        if not args.no_pool:
            connection.close_pool()  # type: ignore[attr-defined]  # the PostgreSQL backend's
            connection.settings_dict["OPTIONS"] = {}
        with owner_mode():
            teardown_databases(config, verbosity=0)
    env = {
        "python": platform.python_version(),
        "redis": info.get("redis_version"),
        "cpus": os.cpu_count(),
        "concurrency": args.concurrency,
        "requests": args.requests,
        "limits": args.limits,
        "loop": args.loop,
        "pin": args.pin,
        "pool": not args.no_pool,
        "floor": args.floor,
    }
    print(
        f"Redis {env['redis']}, Python {env['python']}, {env['cpus']} CPUs; concurrency {args.concurrency}\n"
    )
    if args.floor:
        print(
            f"floor: each request two EVALSHA of `{FLOOR_LUA}` over the same client, same arrivals "
            "and holds; floor (half), admission, floor (half) per hold time, floor halves pooled\n"
        )
    print(
        f"{'hold':>8} {'req/s':>8} {'CPU µs/req':>10}  {'what':<15} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    for name, row in results.items():
        for what in ("reserve", "settle", "reserve+settle"):
            lat = row[what]
            head = (
                f"{name[5:]:>8} {row['req_per_s']:>8.0f} {row['cpu_us_per_req']:>10.0f} "
                f"{row['redis_us_per_script']:>15.1f}"
                if what == "reserve"
                else " " * 44
            )
            print(f"{head}  {what:<15} {lat['p50_ms']:>8.3f} {lat['p99_ms']:>8.3f} {lat['max_ms']:>8.2f}")
        if "floor" in row:
            floor = row["floor"]
            for what, label in zip(FLOOR, ("floor 1st", "floor 2nd", "floor pair"), strict=True):
                lat = floor[what]
                head = (
                    f"{'':>8} {floor['req_per_s']:>8.0f} {floor['cpu_us_per_req']:>10.0f} "
                    f"{floor['redis_us_per_script']:>15.1f}"
                    if what == "first"
                    else " " * 44
                )
                print(
                    f"{head}  {label:<15} {lat['p50_ms']:>8.3f} {lat['p99_ms']:>8.3f} {lat['max_ms']:>8.2f}"
                )
            ratio = row["pair_ratio_to_floor"]
            print(
                f"{'':44}  {'pair ÷ floor':<15} {ratio['p50_ms']:>7.2f}x {ratio['p99_ms']:>7.2f}x "
                f"{ratio['max_ms']:>7.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
