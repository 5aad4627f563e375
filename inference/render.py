"""Render a serving profile as the exact ``vllm serve`` command or a Kubernetes manifest.

Output is a pure function of (profile, GPU, replicas, image): no timestamps, no absolute paths of
this checkout, keys in a fixed order, so it is golden-testable and reviewable in a diff.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

from inference.gpus import GIB, GpuType
from inference.plan import plan
from inference.profiles import TEMPLATES_DIR, Profile

PORT = 8000
LISTEN_HOST = "0.0.0.0"  # noqa: S104 - the server listens on the pod/host network by design
SHM_DIR = "/dev/shm"  # noqa: S108 - a path inside the container, backed by a Memory emptyDir
CACHE_DIR = "/tmp"  # noqa: S108 - a path inside the container, backed by its own emptyDir
TEMPLATE_MOUNT = "/etc/vllm/templates"
"""Where chat templates from ``inference/templates/`` are mounted (k8s) or copied (bare metal)."""


API_KEY_ENV = "VLLM_API_KEY"
API_KEY_SECRET_KEY = "api-key"  # noqa: S105 - the key's name inside the Secret, not a password
DEFAULT_GATEWAY_NAMESPACE = "gennai"
#: Label the platform's web and worker pods carry (both call upstreams: chat, /v1, the health probe).
DEFAULT_GATEWAY_LABELS = {"gennai.example.go.jp/inference-client": "true"}


@dataclass(frozen=True)
class GatewayAccess:
    """Who may reach the model server: the platform's pods, by namespace and labels."""

    namespace: str = DEFAULT_GATEWAY_NAMESPACE
    labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_GATEWAY_LABELS))


def api_key_secret_name(profile: Profile) -> str:
    """The Kubernetes Secret holding the server's API key (created by the operator, never rendered)."""
    return f"vllm-{profile.name}-api-key"


def registry_secret_refs(profile: Profile) -> tuple[str, str]:
    """The matching registry ``secret_ref`` values: ``env:GENNAI_UPSTREAM_<NAME>`` and ``file:<name>``."""
    env_name = "GENNAI_UPSTREAM_" + re.sub(r"[^A-Z0-9]+", "_", f"VLLM_{profile.name}".upper()).strip("_")
    return f"env:{env_name}", f"file:{api_key_secret_name(profile)}"


class RenderError(ValueError):
    """The profile cannot be rendered for the requested GPU (e.g. it does not fit)."""


@dataclass(frozen=True)
class Rendered:
    """The resolved tensor-parallel size and anything the operator should know."""

    tensor_parallel_size: int
    warnings: tuple[str, ...]


def resolve_tp(profile: Profile, gpu: GpuType) -> Rendered:
    """The profile's fixed tensor-parallel size, or the planner's smallest fit for ``auto``."""
    result = plan(profile, gpu)
    fixed = profile.vllm.tensor_parallel_size
    if fixed == "auto":
        chosen = result.chosen
        if chosen is None:
            raise RenderError(
                f"{profile.name} does not fit on 8 x {gpu.key} at max_model_len "
                f"{profile.vllm.max_model_len}: nothing to render (see `python -m inference plan`)"
            )
        return Rendered(chosen.tensor_parallel_size, ())
    row = next((r for r in result.rows if r.tensor_parallel_size == fixed), None)
    if row is None or not row.fits:
        return Rendered(
            fixed,
            (
                f"tensor_parallel_size={fixed} is fixed by the profile "
                f"but the planner says it does not fit on {gpu.key}",
            ),
        )
    return Rendered(fixed, ())


def vllm_args(profile: Profile, tp: int, *, port: int = PORT) -> list[str]:
    """Arguments after ``vllm`` (starting with ``serve``), in a fixed order."""
    v = profile.vllm
    args = [
        "serve",
        profile.model_path,
        "--served-model-name",
        v.served_model_name,
        "--tensor-parallel-size",
        str(tp),
        "--max-model-len",
        str(v.max_model_len),
        "--gpu-memory-utilization",
        f"{v.gpu_memory_utilization:g}",
        "--dtype",
        v.dtype,
    ]
    if v.quantization:
        args += ["--quantization", v.quantization]
    if v.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", v.kv_cache_dtype]
    args += ["--max-num-seqs", str(v.max_num_seqs), "--max-num-batched-tokens", str(v.max_num_batched_tokens)]
    if v.trust_remote_code:
        args.append("--trust-remote-code")
    if v.chat_template:
        args += ["--chat-template", f"{TEMPLATE_MOUNT}/{v.chat_template}"]
    if v.reasoning_parser:
        args += ["--reasoning-parser", v.reasoning_parser]
        if v.reasoning_parser_plugin:
            args += ["--reasoning-parser-plugin", v.reasoning_parser_plugin]
    if v.tool_call_parser:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", v.tool_call_parser]
        if v.tool_parser_plugin:
            args += ["--tool-parser-plugin", v.tool_parser_plugin]
    args += list(v.extra_args)
    args += ["--host", LISTEN_HOST, "--port", str(port)]
    return args


def _format_command(argv: list[str], prefix: str = "") -> str:
    """One flag (with its value) per line, joined with shell continuations."""
    parts: list[str] = []
    for token in argv:
        quoted = shlex.quote(token)
        if token.startswith("--") or not parts:
            parts.append(quoted)
        else:
            parts[-1] += " " + quoted
    # parts[0] is "vllm serve <path>"; each flag follows on its own line.
    return prefix + " \\\n  ".join(parts)


def render_command(profile: Profile, gpu: GpuType, *, replicas: int = 1) -> tuple[str, Rendered]:
    """The shell command(s): one per replica, each pinned to its own GPUs and port."""
    if replicas < 1:
        raise RenderError("replicas must be >= 1")
    resolved = resolve_tp(profile, gpu)
    tp = resolved.tensor_parallel_size
    env_ref, file_ref = registry_secret_refs(profile)
    lines: list[str] = [
        f"# API key: export {API_KEY_ENV}=<key> first (vLLM reads it as --api-key);\n"
        f"# register the deployment with secret_ref {env_ref} (or {file_ref}) holding the same key."
    ]
    if profile.vllm.chat_template:
        lines.append(
            f"# needs {TEMPLATE_MOUNT}/{profile.vllm.chat_template} (copy from inference/templates/)"
        )
    for i in range(replicas):
        if replicas == 1:
            lines.append(_format_command(["vllm", *vllm_args(profile, tp)]))
            continue
        devices = ",".join(str(d) for d in range(i * tp, (i + 1) * tp))
        lines.append(
            _format_command(
                ["vllm", *vllm_args(profile, tp, port=PORT + i)], prefix=f"CUDA_VISIBLE_DEVICES={devices} "
            )
        )
    return "\n\n".join(lines) + "\n", resolved


def _labels(profile: Profile) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": profile.name,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "gennai",
    }


def _memory_request_gib(profile: Profile) -> int:
    """Host RAM: vLLM stages weights through CPU memory while loading, plus headroom."""
    from inference.plan import bytes_per_param

    _, bpp = bytes_per_param(profile)
    return math.ceil(profile.architecture.params_total * bpp / GIB) + 16


def k8s_objects(
    profile: Profile,
    gpu: GpuType,
    *,
    replicas: int,
    image: str | None = None,
    gateway: GatewayAccess | None = None,
) -> tuple[list[Any], Rendered]:
    """Deployment, Service, NetworkPolicy and (with a chat template) ConfigMap, as plain dicts.

    The server requires an API key (``--api-key`` from the Secret
    :func:`api_key_secret_name`), and the NetworkPolicy admits ingress to its
    port only from the platform's pods (``gateway``): the key and the policy
    are two independent locks on the same door. Egress is DNS only: nothing a
    model pod holds (prompts up to 機密性3) can be sent anywhere else.
    """
    gateway = gateway or GatewayAccess()
    resolved = resolve_tp(profile, gpu)
    tp = resolved.tensor_parallel_size
    name = f"vllm-{profile.name}"
    labels = _labels(profile)
    selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": profile.name}
    mem = f"{_memory_request_gib(profile)}Gi"
    cpu = str(4 * tp)
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    volume_mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": "/models", "readOnly": True},
        {"name": "dshm", "mountPath": SHM_DIR},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "models",
            "persistentVolumeClaim": {"claimName": profile.deploy.models_pvc, "readOnly": True},
        },
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{profile.deploy.shm_size_gib}Gi"}},
        {"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}},
    ]
    objects: list[Any] = []
    if profile.vllm.chat_template:
        cm_name = f"{name}-chat-template"
        template_text = (TEMPLATES_DIR / profile.vllm.chat_template).read_text(encoding="utf-8")
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": cm_name, "labels": labels},
                "data": {profile.vllm.chat_template: template_text},
            }
        )
        volume_mounts.append({"name": "chat-template", "mountPath": TEMPLATE_MOUNT, "readOnly": True})
        volumes.append({"name": "chat-template", "configMap": {"name": cm_name}})
    env = [
        # The image may have no passwd entry for uid 1000: give libraries a user name and a home.
        {"name": "USER", "value": "vllm"},
        {"name": "HOME", "value": CACHE_DIR},
        {"name": "XDG_CACHE_HOME", "value": f"{CACHE_DIR}/.cache"},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/.cache/huggingface"},
        {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_DIR}/.cache/vllm"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        # The API key comes from a Secret the operator creates; it never appears in this manifest.
        {
            "name": API_KEY_ENV,
            "valueFrom": {"secretKeyRef": {"name": api_key_secret_name(profile), "key": API_KEY_SECRET_KEY}},
        },
    ]
    container = {
        "name": "vllm",
        "image": image or profile.deploy.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["vllm"],
        # Kubernetes expands $(VLLM_API_KEY) from the env entry above.
        "args": [*vllm_args(profile, tp), "--api-key", f"$({API_KEY_ENV})"],
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": cpu, "memory": mem, "nvidia.com/gpu": str(tp)},
            "limits": {"memory": mem, "nvidia.com/gpu": str(tp)},
        },
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 90},
        "readinessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 4},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": volume_mounts,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "gennai.example.go.jp/served-model-name": profile.vllm.served_model_name,
                "gennai.example.go.jp/hf-repo": profile.hf_repo,
                "gennai.example.go.jp/license": profile.license,
                "gennai.example.go.jp/registry-secret-ref": registry_secret_refs(profile)[0],
            },
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            # GPUs are scarce: replace pods in place rather than surge onto GPUs that are not there.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 120,
                    "nodeSelector": {"nvidia.com/gpu.product": gpu.k8s_product},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            # Outgoing: DNS only. The server loads weights from its volume and needs nothing
            # else; prompts of 機密性2/3 must not be able to leave through a model pod.
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": gateway.namespace}
                            },
                            "podSelector": {"matchLabels": dict(gateway.labels)},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
        },
    }
    objects += [deployment, service, network_policy]
    return objects, resolved


class _Dumper(yaml.SafeDumper):
    """Block-style YAML without anchors/aliases; multi-line strings (chat templates) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def render_k8s(
    profile: Profile,
    gpu: GpuType,
    *,
    replicas: int = 1,
    image: str | None = None,
    gateway: GatewayAccess | None = None,
) -> tuple[str, Rendered]:
    """The manifest as a multi-document YAML string."""
    if replicas < 1:
        raise RenderError("replicas must be >= 1")
    gateway = gateway or GatewayAccess()
    objects, resolved = k8s_objects(profile, gpu, replicas=replicas, image=image, gateway=gateway)
    env_ref, file_ref = registry_secret_refs(profile)
    secret = api_key_secret_name(profile)
    selector = ",".join(f"{k}={v}" for k, v in gateway.labels.items())
    header = (
        f"# Generated by `python -m inference render {profile.name} --gpu {gpu.key} "
        f"--replicas {replicas} --k8s`.\n"
        f"# {profile.display_name} ({profile.hf_repo}), licence: {profile.license}.\n"
        f"# Before applying: create the API key Secret (never commit it), e.g.\n"
        f"#   kubectl create secret generic {secret} \\\n"
        f"#     --from-literal={API_KEY_SECRET_KEY}=$(openssl rand -hex 32)\n"
        f"# Ingress is admitted only from pods labelled {selector} in namespace {gateway.namespace}.\n"
        f"# Registry: base_url http://vllm-{profile.name}.<namespace>.svc:{PORT}, secret_ref {env_ref}\n"
        f"#   (the same key as env var {env_ref[4:]} of the platform's pods) or {file_ref}\n"
        f"#   (the Secret mounted in GENNAI_UPSTREAM_SECRETS_DIR).\n"
    )
    body = yaml.dump_all(
        objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000
    )
    return header + "---\n" + body, resolved
