"""Attacks on the platform's Terraform (security review).

The providers cannot be downloaded here, so ``terraform validate`` cannot run;
these tests read the HCL as text (and run ``terraform fmt -check`` when the
binary is present) and pin what must not get lost.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_POOL = ROOT / "terraform" / "modules" / "gpu-node-pool"


def _resource(text: str, kind: str, name: str) -> str:
    """The body of ``resource "<kind>" "<name>" { … }`` (braces balanced), or ''."""
    match = re.search(rf'resource\s+"{kind}"\s+"{name}"\s*\{{', text)
    if match is None:
        return ""
    depth, start = 0, match.end() - 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start : index + 1]
    return ""


def test_the_inference_namespace_denies_all_traffic_but_dns_by_default() -> None:
    """The vLLM servers answer any pod that reaches them, and hold level 2–3 prompts: a pod of
    the namespace (a debug pod, a model with remote code) must not reach the internet or the
    platform's database, and nothing but the gateway (the rendered per-model policy) may reach it."""
    text = (GPU_POOL / "main.tf").read_text(encoding="utf-8")
    policy = _resource(text, "kubernetes_network_policy_v1", "default_deny")
    assert policy, "gpu-node-pool must manage a default-deny NetworkPolicy"
    assert re.search(r"namespace\s*=\s*local\.namespace", policy)
    assert re.search(r"pod_selector\s*\{\s*\}", policy), "it must select every pod of the namespace"
    assert re.search(r'policy_types\s*=\s*\[\s*"Ingress"\s*,\s*"Egress"\s*\]', policy)
    assert "ingress {" not in policy, "no ingress rule: the rendered per-model policies admit the gateway"
    # Egress: DNS to kube-dns only, plus what the operator lists explicitly.
    assert '"53"' in policy and "kube-dns" in policy
    assert "var.egress_allowed_cidrs" in policy
    variables = (GPU_POOL / "variables.tf").read_text(encoding="utf-8")
    assert re.search(r'variable\s+"egress_allowed_cidrs"[^}]*default\s*=\s*\[\]', variables, re.S)
    assert re.search(r'variable\s+"default_deny_network_policy"[^}]*default\s*=\s*true', variables, re.S)


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform binary not installed")
def test_terraform_files_are_formatted() -> None:
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", str(ROOT / "terraform")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
