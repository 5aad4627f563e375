"""Render: golden vllm commands and Kubernetes manifests, and their structure."""

from __future__ import annotations

import io
from typing import Any

import pytest
import yaml

from inference.cli import main
from inference.gpus import GPUS
from inference.profiles import load_profile, parse_profile
from inference.render import SHM_DIR, RenderError, registry_secret_refs, render_command, render_k8s

from .golden import check_golden
from .test_profiles import base_data


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    assert main(list(argv), out=out) == 0
    return out.getvalue()


@pytest.mark.parametrize(
    ("profile", "gpu", "replicas"),
    [("llm-jp-4-8b", "h100-80g", "1"), ("llm-jp-4-32b-a3b-thinking", "l40s-48g", "2")],
)
def test_render_golden(profile: str, gpu: str, replicas: str) -> None:
    check_golden(
        f"render-{profile}-{gpu}-x{replicas}.sh",
        run_cli("render", profile, "--gpu", gpu, "--replicas", replicas),
    )
    check_golden(
        f"render-{profile}-{gpu}-x{replicas}.yaml",
        run_cli("render", profile, "--gpu", gpu, "--replicas", replicas, "--k8s"),
    )


def test_command_shape() -> None:
    text, resolved = render_command(load_profile("llm-jp-4-8b"), GPUS["h100-80g"])
    assert "export VLLM_API_KEY" in text and "env:GENNAI_UPSTREAM_VLLM_LLM_JP_4_8B" in text
    flat = " ".join(
        line.rstrip(" \\").strip() for line in text.splitlines() if line and not line.startswith("#")
    )
    assert resolved.tensor_parallel_size == 1
    assert flat.startswith("vllm serve /models/llm-jp/llm-jp-4-8b-instruct --served-model-name llm-jp-4-8b")
    assert "--tensor-parallel-size 1 --max-model-len 32768 --gpu-memory-utilization 0.9" in flat
    assert "--reasoning-parser llmjp4" in flat
    assert "--enable-auto-tool-choice --tool-call-parser llmjp4" in flat
    assert flat.endswith("--host 0.0.0.0 --port 8000")


def test_profiles_without_parsers_render_without_flags() -> None:
    text, _ = render_command(load_profile("llama3-elyza-jp-8b"), GPUS["l40s-48g"])
    assert "--reasoning-parser" not in text and "--tool-call-parser" not in text


def docs(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(text)}


def test_manifest_structure() -> None:
    text, _ = render_k8s(load_profile("llm-jp-4-32b-a3b-thinking"), GPUS["l40s-48g"], replicas=3)
    objs = docs(text)
    assert set(objs) == {"Deployment", "Service", "NetworkPolicy"}
    dep, svc = objs["Deployment"], objs["Service"]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "2"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "gennai-models"
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True and mounts["dshm"]["mountPath"] == SHM_DIR
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    labels = pod["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert svc["spec"]["ports"][0]["port"] == 8000
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"


def test_server_requires_the_api_key_from_a_secret() -> None:
    profile = load_profile("llm-jp-4-8b")
    text, _ = render_k8s(profile, GPUS["h100-80g"])
    objs = docs(text)
    (container,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_API_KEY"] == {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "vllm-llm-jp-4-8b-api-key", "key": "api-key"}},
    }
    assert container["args"][-2:] == ["--api-key", "$(VLLM_API_KEY)"]  # expanded by Kubernetes
    assert "Secret" not in objs  # the key itself is never rendered
    ref = objs["Deployment"]["metadata"]["annotations"]["gennai.example.go.jp/registry-secret-ref"]
    assert ref == registry_secret_refs(profile)[0] == "env:GENNAI_UPSTREAM_VLLM_LLM_JP_4_8B"
    assert "file:vllm-llm-jp-4-8b-api-key" in text  # the header tells the registry both forms


def test_registry_secret_refs_are_valid_registry_references() -> None:
    """The refs the render prints must pass the registry's namespace rule (same patterns)."""
    import re

    for name in ("llm-jp-4-8b", "llm-jp-4-32b-a3b-thinking", "sarashina2-7b"):
        env_ref, file_ref = registry_secret_refs(load_profile(name))
        assert re.fullmatch(r"env:GENNAI_UPSTREAM_[A-Z0-9_]+", env_ref)
        assert re.fullmatch(r"file:[A-Za-z0-9][A-Za-z0-9._-]{0,127}", file_ref) and ".." not in file_ref


def test_network_policy_admits_only_the_gateway() -> None:
    text = run_cli(
        "render", "llm-jp-4-8b", "--k8s", "--gateway-namespace", "gennai-prod",
        "--gateway-label", "app.kubernetes.io/name=gennai", "--gateway-label", "tier=web",
    )  # fmt: skip
    objs = docs(text)
    policy = objs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == objs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (out,) = policy["egress"]  # DNS only: a model pod's prompts cannot leave it
    assert [p["port"] for p in out["ports"]] == [53, 53]
    assert out["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    assert source == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gennai-prod"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "gennai", "tier": "web"}},
    }
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_chat_template_ships_as_configmap() -> None:
    text, _ = render_k8s(load_profile("sarashina2-7b"), GPUS["l40s-48g"])
    objs = docs(text)
    cm = objs["ConfigMap"]
    assert "アシスタント" in cm["data"]["sarashina2-base.jinja"]
    (container,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "/etc/vllm/templates/sarashina2-base.jinja" in container["args"]


def test_output_is_deterministic() -> None:
    p = load_profile("llm-jp-4-8b")
    assert render_k8s(p, GPUS["h200-141g"])[0] == render_k8s(p, GPUS["h200-141g"])[0]
    assert "&id" not in render_k8s(p, GPUS["h200-141g"])[0]  # no YAML anchors


def test_image_override() -> None:
    text = run_cli("render", "llm-jp-4-8b", "--k8s", "--image", "registry.local/vllm:test")
    assert "image: registry.local/vllm:test" in text


def test_auto_tp_that_does_not_fit_is_an_error() -> None:
    data = base_data()
    data["architecture"]["params_total"] = data["architecture"]["params_active"] = 900_000_000_000
    with pytest.raises(RenderError, match="does not fit on 8 x h100-80g"):
        render_command(parse_profile(data, "huge"), GPUS["h100-80g"])


def test_fixed_tp_that_does_not_fit_warns(capsys: pytest.CaptureFixture[str]) -> None:
    data = base_data()
    data["vllm"]["tensor_parallel_size"] = 1
    data["architecture"]["params_total"] = data["architecture"]["params_active"] = 40_000_000_000
    text, resolved = render_command(parse_profile(data, "big"), GPUS["h100-80g"])
    assert "--tensor-parallel-size 1" in text
    assert resolved.warnings and "does not fit" in resolved.warnings[0]
