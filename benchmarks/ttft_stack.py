"""TTFT through the platform's /v1 vs directly against the model server (median of N).

Start the platform first (``make run``: it serves the local llama.cpp model on :8081
behind ``standard-chat``), create an API key
(``make -s api-key MINISTRY=digital NAME=bench`` from another terminal), then::

    .venv/bin/python benchmarks/ttft_stack.py --api-key gn-... [-n 20]

Requests alternate direct / platform so drift on the shared 2-core machine hits both
sides equally. Output: a table and ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.bench import BenchConfig, stream_one


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    direct = BenchConfig(
        base_url=args.direct_url,
        model=args.direct_model,
        max_tokens=args.max_tokens,
        prompt=args.prompt,
        warmup=0,
    )
    platform = BenchConfig(
        base_url=args.platform_url,
        model=args.alias,
        max_tokens=args.max_tokens,
        prompt=args.prompt,
        warmup=0,
        api_key=args.api_key,
    )
    samples: dict[str, list[float]] = {"direct": [], "platform": []}
    async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
        for i in range(args.n + 2):  # two unrecorded warm-up rounds
            for name, cfg, model in (
                ("direct", direct, args.direct_model),
                ("platform", platform, args.alias),
            ):
                result = await stream_one(client, cfg, model, concurrency=1, index=i)
                if result.error:
                    raise SystemExit(f"{name} request failed: {result.error}")
                if i >= 2 and result.ttft_s is not None:
                    samples[name].append(result.ttft_s * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--platform-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--direct-url", default="http://127.0.0.1:8081/v1")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--alias", default="standard-chat")
    parser.add_argument("--direct-model", default="smollm2-135m-instruct")
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prompt", default="Write two sentences about the sea.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    samples = asyncio.run(measure(args))
    summary = {
        name: {
            "n": len(v),
            "median_ms": round(statistics.median(v), 1),
            "p95_ms": round(sorted(v)[int(0.95 * (len(v) - 1))], 1),
        }
        for name, v in samples.items()
    }
    overhead = summary["platform"]["median_ms"] - summary["direct"]["median_ms"]
    print(f"{'path':<10}{'n':>4}{'median TTFT ms':>16}{'p95 ms':>10}")
    for name, row in summary.items():
        print(f"{name:<10}{row['n']:>4}{row['median_ms']:>16}{row['p95_ms']:>10}")
    print(f"platform overhead (median): {overhead:.1f} ms")
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "overhead_ms": overhead, "samples": samples}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
