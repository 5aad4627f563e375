"""Command line: ``python -m inference {profiles,plan,render,serve-dev,bench}``.

Exit status: 0 success; 1 the answer is negative (``plan``: does not fit; ``bench``: some requests
failed); 2 bad input (invalid profile, unknown GPU, bad arguments, missing dev-server packages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from inference import bench as bench_mod
from inference import devserver
from inference import plan as plan_mod
from inference import render as render_mod
from inference.gpus import GPUS, GpuType, get_gpu
from inference.profiles import PROFILES_DIR, Profile, ProfileError, load_all, load_profile

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE = 0, 1, 2


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2,4,8, got {text!r}"
        ) from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="Gennai GPU-tier tooling: serving profiles, GPU planner, vLLM/Kubernetes renderer, "
        "dev CPU server, endpoint benchmark. See docs/inference.md.",
    )
    parser.add_argument(
        "--profiles-dir",
        type=Path,
        default=PROFILES_DIR,
        help="directory of serving profiles (default: inference/profiles)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("profiles", help="list and validate the serving profiles")

    gpu_help = f"GPU type ({', '.join(GPUS)}); default: the profile's deploy.gpu"
    p = sub.add_parser("plan", help="GPU memory fit: smallest tensor-parallel size and max concurrency")
    p.add_argument("profile", help="profile name or path to a .yaml file")
    p.add_argument("--gpu", choices=sorted(GPUS), help=gpu_help)
    p.add_argument("--max-model-len", type=_positive, help="context length (default: the profile's)")
    p.add_argument(
        "--concurrency", type=_positive, default=1, help="full-length sequences to fit (default 1)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")

    r = sub.add_parser("render", help="print the vllm serve command, or a Kubernetes manifest with --k8s")
    r.add_argument("profile", help="profile name or path to a .yaml file")
    r.add_argument("--gpu", choices=sorted(GPUS), help=gpu_help)
    r.add_argument("--replicas", type=_positive, help="replicas (default: the profile's deploy.replicas)")
    r.add_argument("--k8s", action="store_true", help="emit a Deployment + Service manifest")
    r.add_argument("--image", help="container image for --k8s (default: the profile's deploy.image)")
    r.add_argument(
        "--gateway-namespace",
        default=render_mod.DEFAULT_GATEWAY_NAMESPACE,
        help="namespace of the platform's pods that may reach the server (--k8s NetworkPolicy)",
    )
    r.add_argument(
        "--gateway-label",
        action="append",
        type=_label,
        metavar="KEY=VALUE",
        help="label of the platform's pods that may reach the server (repeatable; default "
        + ",".join(f"{k}={v}" for k, v in render_mod.DEFAULT_GATEWAY_LABELS.items())
        + ")",
    )

    d = sub.add_parser("serve-dev", help="run the local CPU model server (llama.cpp + SmolLM2-135M)")
    d.add_argument("--port", type=_positive, default=devserver.DEFAULT_PORT)
    d.add_argument("--host", default=devserver.DEFAULT_HOST, help="listen address (default: loopback)")
    d.add_argument(
        "--print", dest="dry_run", action="store_true", help="print the command instead of running it"
    )

    b = sub.add_parser(
        "bench", help="measure TTFT, tokens/s and concurrency of an OpenAI-compatible endpoint"
    )
    b.add_argument("base_url", help="e.g. http://127.0.0.1:8000 or http://host:8000/v1")
    b.add_argument("--model", help="model id (default: the first one /v1/models lists)")
    b.add_argument(
        "--requests", type=_positive, default=16, help="requests per concurrency level (default 16)"
    )
    b.add_argument("--concurrency", type=_levels, default=(1, 2, 4, 8), help="levels, e.g. 1,2,4,8 (default)")
    b.add_argument("--max-tokens", type=_positive, default=128)
    b.add_argument("--prompt", default=bench_mod.DEFAULT_PROMPT)
    b.add_argument(
        "--timeout", type=float, default=120.0, help="per-request deadline in seconds (default 120)"
    )
    b.add_argument("--warmup", type=int, default=1, help="unrecorded requests before measuring (default 1)")
    b.add_argument(
        "--ignore-eos", action="store_true", help="vLLM: always generate --max-tokens (fair comparisons)"
    )
    b.add_argument(
        "--api-key-env",
        default="GENNAI_BENCH_API_KEY",
        help="environment variable holding a bearer token, if the endpoint needs one "
        "(default GENNAI_BENCH_API_KEY)",
    )
    b.add_argument(
        "--json", dest="json_out", type=Path, help="also write the full report (all requests) here"
    )
    return parser


def _profile_and_gpu(args: argparse.Namespace) -> tuple[Profile, GpuType]:
    profile = load_profile(args.profile, args.profiles_dir)
    return profile, get_gpu(args.gpu or profile.deploy.gpu)


def cmd_profiles(args: argparse.Namespace, out: TextIO) -> int:
    profiles = load_all(args.profiles_dir)
    width = max((len(p.name) for p in profiles), default=4)
    for p in profiles:
        params = f"{p.architecture.params_total / 1e9:.1f}B"
        if p.architecture.is_moe:
            params += f"/{p.architecture.params_active / 1e9:.1f}B active"
        out.write(
            f"{p.name:<{width}}  {params:<18}  ctx {p.vllm.max_model_len:>6}  {p.license}  ({p.hf_repo})\n"
        )
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    profile, gpu = _profile_and_gpu(args)
    result = plan_mod.plan(profile, gpu, max_model_len=args.max_model_len, concurrency=args.concurrency)
    if args.json:
        out.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(plan_mod.format_table(result))
    return EXIT_OK if result.fits else EXIT_NEGATIVE


def cmd_render(args: argparse.Namespace, out: TextIO) -> int:
    profile, gpu = _profile_and_gpu(args)
    replicas = args.replicas or profile.deploy.replicas
    if args.k8s:
        gateway = render_mod.GatewayAccess(
            namespace=args.gateway_namespace,
            labels=dict(args.gateway_label or render_mod.DEFAULT_GATEWAY_LABELS.items()),
        )
        text, resolved = render_mod.render_k8s(
            profile, gpu, replicas=replicas, image=args.image, gateway=gateway
        )
    else:
        text, resolved = render_mod.render_command(profile, gpu, replicas=replicas)
    for warning in resolved.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out.write(text)
    return EXIT_OK


def cmd_serve_dev(args: argparse.Namespace, out: TextIO) -> int:
    command = devserver.prepare(host=args.host, port=args.port)
    if args.dry_run:
        out.write(" ".join(command) + "\n")
        return EXIT_OK
    out.write(f"serving {devserver.SERVED_MODEL_NAME} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)\n")
    out.flush()
    return devserver.run(command)


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    cfg = bench_mod.BenchConfig(
        base_url=args.base_url,
        model=args.model,
        requests=args.requests,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt=args.prompt,
        timeout_s=args.timeout,
        warmup=args.warmup,
        ignore_eos=args.ignore_eos,
        api_key=os.environ.get(args.api_key_env) or None,
    )
    report = asyncio.run(bench_mod.run_bench(cfg))
    out.write(bench_mod.format_table(report))
    if args.json_out:
        args.json_out.write_text(
            json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        out.write(f"wrote {args.json_out}\n")
    return EXIT_OK if all(level.errors == 0 for level in report.levels) else EXIT_NEGATIVE


COMMANDS = {
    "profiles": cmd_profiles,
    "plan": cmd_plan,
    "render": cmd_render,
    "serve-dev": cmd_serve_dev,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Parse ``argv`` and run the command; errors go to stderr as one readable message."""
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        return COMMANDS[args.command](args, stream)
    except (
        ProfileError,
        render_mod.RenderError,
        devserver.DevServerUnavailable,
        bench_mod.BenchError,
        ValueError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
