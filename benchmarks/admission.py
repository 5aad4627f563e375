"""Admission (reserve + settle) latency per request under N-way concurrency, on one event loop.

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/admission.py \\
        [--concurrency 200] [--requests 20000] [--hold-ms 0,50,1000] [--warmup 2000]
        [--limits every|typical] [--json out.json] [--baseline DIR [--rounds 3]]

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

A/B on a shared machine: ``--baseline DIR`` (a checkout of another commit, e.g.
``git archive <commit> | tar -x -C DIR``) runs this script on that tree and on
this one alternately, ``--rounds`` times each, one process per run, and prints
every run with the load average around it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


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


async def run(subjects: list[Any], *, concurrency: int, requests: int, hold: float) -> dict[str, Any]:
    from apps.quotas.admission import areserve, asettle

    reserve_s: list[float] = []
    settle_s: list[float] = []
    remaining = requests

    async def worker(n: int) -> None:
        nonlocal remaining
        subject = subjects[n % len(subjects)]
        jitter = random.Random(n)  # noqa: S311 (spreading arrivals, not a secret)
        if hold:
            # Requests in flight arrive spread out, as real ones do, not in lock-step bursts of N.
            await asyncio.sleep(jitter.uniform(0, hold))
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            r = await areserve(
                subject=subject,
                prompt_tokens=200,
                max_tokens=800,
                request_id=uuid.uuid4().hex,
                price=Decimal(300),
            )
            t1 = time.perf_counter()
            if hold:
                await asyncio.sleep(hold * jitter.uniform(0.5, 1.5))
            t2 = time.perf_counter()
            await asettle(reservation=r, prompt_tokens=200, completion_tokens=321, cost_yen=Decimal("0.1563"))
            t3 = time.perf_counter()
            reserve_s.append(t1 - t0)
            settle_s.append(t3 - t2)

    pauses: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append(time.perf_counter() - started.pop())

    gc.callbacks.append(on_gc)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    gc.callbacks.remove(on_gc)
    both = sorted(r + s for r, s in zip(reserve_s, settle_s, strict=True))
    out: dict[str, Any] = {
        "requests": len(both),
        "req_per_s": len(both) / wall,
        "cpu_us_per_req": cpu / len(both) * 1e6,
        # The collector's pauses during the run (they stop the event loop, so they reach the p99).
        "gc_pauses": len(pauses),
        "gc_pause_max_ms": max(pauses, default=0.0) * 1e3,
        "gc_pause_total_ms": sum(pauses) * 1e3,
    }
    for name, values in (
        ("reserve", sorted(reserve_s)),
        ("settle", sorted(settle_s)),
        ("reserve+settle", both),
    ):
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


def run_ab(args: argparse.Namespace) -> int:
    """This checkout and ``--baseline`` alternately (B A B A …), each in its own process, both
    measured by this script (so both get the same driver, heap handling and statistics)."""
    import subprocess
    import tempfile

    passthrough = [
        *(["--no-gc-freeze"] if args.no_gc_freeze else []),
        *(["--no-pool"] if args.no_pool else []),
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
        for hold_ms in [float(h) for h in args.hold_ms.split(",")]:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                runner.run(
                    run(subjects, concurrency=args.concurrency, requests=args.warmup, hold=hold_ms / 1000)
                )
            client.config_resetstat()
            cpu0 = redis_cpu_us(client)
            with asyncio.Runner(loop_factory=new_loop) as runner:
                row = runner.run(
                    run(subjects, concurrency=args.concurrency, requests=args.requests, hold=hold_ms / 1000)
                )
            # Server-side time of the scripts (admit and settle together), independent of the client.
            stats = client.info("commandstats")
            evalsha = stats.get("cmdstat_evalsha", {})
            row["redis_us_per_script"] = float(evalsha.get("usec_per_call", 0.0))
            row["redis_scripts"] = int(evalsha.get("calls", 0))
            cpu1 = redis_cpu_us(client)
            if cpu0 is not None and cpu1 is not None and row["redis_scripts"]:
                # Everything Redis did (reading, parsing, the scripts, replying) per script.
                row["redis_cpu_us_per_script"] = (cpu1 - cpu0) / row["redis_scripts"]
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
    }
    print(
        f"Redis {env['redis']}, Python {env['python']}, {env['cpus']} CPUs; concurrency {args.concurrency}\n"
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
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
