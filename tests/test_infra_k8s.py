"""The platform's Kubernetes manifests (infra/k8s, infra/README.md "Kubernetes manifests").

No cluster and no kustomize here: these tests read the YAML and pin what must not get
lost (security context, probes, the queue split, which workload holds the migration
login, secrets only by reference, default deny). They check structure, not that a
cluster accepts the objects; when kubectl is present, the example overlay is rendered
as well and its workloads checked again.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from apps.registry.egress import EgressPolicy

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
SETTINGS_DIR = ROOT / "gennai" / "settings"

IMAGE = "gennai-web"
SECRET = "gennai-secrets"
MIGRATION_URL_KEY = "DATABASE_URL_MIGRATE"
APP_URL_KEY = "DATABASE_URL_APP"
# Workloads that hold the migration login (DDL): nothing else may.
MIGRATION_LOGIN = {"gennai-migrate", "gennai-worker-maintenance"}
# Each worker and exactly the queues it consumes.
WORKER_QUEUES = {
    "gennai-worker": {"celery"},
    "gennai-worker-embed": {"embed"},
    "gennai-worker-maintenance": {"maintenance"},
}
# Read by uvicorn, not by the settings (infra/README.md, the image's environment table).
PROCESS_ENV = {"FORWARDED_ALLOW_IPS", "WEB_CONCURRENCY"}
# Names that look secret but are not (a directory where the keys are mounted).
NOT_SECRETS = {"GENNAI_UPSTREAM_SECRETS_DIR"}
TMP = "/tmp"  # noqa: S108 - the mount path of the writable emptyDir, not a temporary file
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _base_objects() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(BASE.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _load(path)
    ]


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def _workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and Jobs by name."""
    return {**_by_kind(objects, "Deployment"), **_by_kind(objects, "Job")}


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _config_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    return _by_kind(objects, "ConfigMap")["gennai-config"]["data"]


def _env_names(container: dict[str, Any], objects: list[dict[str, Any]]) -> set[str]:
    """Every variable a container gets: its env plus the ConfigMaps it takes through envFrom."""
    config_maps = _by_kind(objects, "ConfigMap")
    names = set(_env(container))
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, f"{container['name']}: envFrom only from ConfigMaps (secrets by key)"
        names |= set(config_maps[ref["name"]]["data"])
    return names


def _command(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _queues(command: list[str]) -> set[str]:
    for flag in ("-Q", "--queues"):
        if flag in command:
            return set(command[command.index(flag) + 1].split(","))
    return set()


def _prod_required() -> tuple[str, ...]:
    """REQUIRED of gennai/settings/prod.py, read without importing it (it needs the env)."""
    tree = ast.parse((SETTINGS_DIR / "prod.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "REQUIRED" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("REQUIRED not found in gennai/settings/prod.py")


def _image_command() -> list[str]:
    """The CMD of infra/docker/Dockerfile (exec form), i.e. web's command."""
    text = (ROOT / "infra" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"^CMD\s+(\[.*?\])", text, re.M | re.S)
    assert match, "the Dockerfile has no exec-form CMD"
    return list(ast.literal_eval(match.group(1).replace("\\\n", "")))


def _check_workload_security(name: str, workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is False, f"{name}: no service account token"
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for container in _containers(workload):
        where = f"{name}/{container['name']}"
        context = container.get("securityContext", {})
        for key, value in SECURITY_CONTEXT.items():
            assert context.get(key) == value, f"{where}: securityContext.{key} must be {value!r}"
        assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL capabilities"
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp"
        tmp = [mount for mount in container.get("volumeMounts", []) if mount["mountPath"] == TMP]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: an emptyDir at /tmp"
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: resources.{part} cpu+memory"
        image = container["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{where}: image {image!r} needs an explicit tag"
        assert tag != "latest", f"{where}: no latest tag"
        assert repository.rsplit("/", 1)[-1] == IMAGE, f"{where}: the platform image {IMAGE}"


# --- kustomization ---------------------------------------------------------------------


def test_every_yaml_document_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert files, "infra/k8s has no manifests"
    for path in files:
        assert _load(path), f"{path} is empty"


def test_base_kustomization_lists_exactly_its_files() -> None:
    kustomization = _load(BASE / "kustomization.yaml")[0]
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for resource in listed:
        assert (BASE / resource).is_file(), f"base/kustomization.yaml lists a missing {resource}"
    present = {path.name for path in BASE.glob("*.y*ml")} - {"kustomization.yaml"}
    assert present == set(listed), f"not listed in base/kustomization.yaml: {sorted(present - set(listed))}"
    names = [(obj["kind"], obj["metadata"]["name"]) for obj in _base_objects()]
    assert len(names) == len(set(names)), "two objects of the same kind and name"


def test_the_example_overlay_sets_the_site_values() -> None:
    overlay = _load(OVERLAY / "kustomization.yaml")[0]
    for resource in overlay["resources"]:
        assert (OVERLAY / resource).exists(), f"overlay resource {resource} missing"
    assert "../../base" in overlay["resources"]
    assert overlay.get("namespace"), "the overlay sets the namespace"
    images = {image["name"]: image for image in overlay["images"]}
    tag = str(images[IMAGE]["newTag"])
    assert tag and tag not in {"latest", "set-by-overlay"}, "the overlay sets a release tag"
    deployments = _by_kind(_base_objects(), "Deployment")
    hpa_targets = {
        hpa["spec"]["scaleTargetRef"]["name"]
        for hpa in _by_kind(_base_objects(), "HorizontalPodAutoscaler").values()
    }
    for replicas in overlay["replicas"]:
        assert replicas["name"] in deployments, f"replicas for unknown {replicas['name']}"
        assert replicas["name"] not in hpa_targets, f"{replicas['name']} is scaled by its HPA"
        if replicas["name"] == "gennai-beat":
            assert replicas["count"] == 1
    patched = {patch.get("target", {}).get("name") for patch in overlay["patches"]}
    assert "gennai-web-ingress" in patched, "the overlay sets the ingress controller's namespace"
    for patch in overlay["patches"]:
        assert (OVERLAY / patch["path"]).is_file(), f"overlay patch {patch['path']} missing"


# --- workloads -------------------------------------------------------------------------


def test_every_container_is_locked_down() -> None:
    workloads = _workloads(_base_objects())
    assert set(WORKER_QUEUES) | {"gennai-web", "gennai-beat", "gennai-migrate"} <= set(workloads)
    for name, workload in workloads.items():
        _check_workload_security(name, workload)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        if workload["kind"] == "Deployment":
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), f"{name}: selector does not match its pods"


def test_web_probes_and_graceful_shutdown() -> None:
    objects = _base_objects()
    web = _workloads(objects)["gennai-web"]
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container, "web runs the image's uvicorn command"
    image_command = _image_command()
    assert image_command[:2] == ["uvicorn", "gennai.asgi:application"]
    assert image_command[image_command.index("--port") + 1] == "8000"
    graceful = int(image_command[image_command.index("--timeout-graceful-shutdown") + 1])
    assert {port["containerPort"] for port in container["ports"]} == {8000}
    allowed_hosts = _config_data(objects)["GENNAI_ALLOWED_HOSTS"].split(",")
    for probe, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ):
        get = container.get(probe, {}).get("httpGet", {})
        assert get.get("path") == path and get.get("port") == 8000, f"web {probe} must GET {path} on 8000"
        hosts = [header["value"] for header in get.get("httpHeaders", []) if header["name"] == "Host"]
        assert hosts and hosts[0] in allowed_hosts, f"web {probe}: a Host header in GENNAI_ALLOWED_HOSTS"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > graceful + int(pre_stop[1]), (
        "the grace period must cover the preStop sleep and uvicorn's graceful shutdown"
    )
    assert "replicas" not in web["spec"], "the HPA owns web's replica count"
    hpas = {
        hpa["spec"]["scaleTargetRef"]["name"]: hpa
        for hpa in _by_kind(objects, "HorizontalPodAutoscaler").values()
    }
    assert {"gennai-web", "gennai-worker-embed"} <= set(hpas)
    for hpa in hpas.values():
        assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    assert _by_kind(objects, "PodDisruptionBudget")["gennai-web"]["spec"]["selector"][
        "matchLabels"
    ].items() <= (web["spec"]["template"]["metadata"]["labels"].items())
    service = _by_kind(objects, "Service")["gennai-web"]
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()


def test_exactly_one_beat() -> None:
    workloads = _workloads(_base_objects())
    beat = workloads["gennai-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    (container,) = beat["spec"]["template"]["spec"]["containers"]
    command = _command(container)
    assert command[:4] == ["celery", "-A", "gennai", "beat"]
    assert command[command.index("--schedule") + 1].startswith(TMP + "/"), "the schedule file in the emptyDir"
    for name, workload in workloads.items():
        if name == "gennai-beat":
            continue
        for other in _containers(workload):
            words = _command(other)
            assert "beat" not in words and "-B" not in words and "--beat" not in words, (
                f"{name} runs beat too"
            )


def test_each_worker_consumes_exactly_its_queues() -> None:
    workloads = _workloads(_base_objects())
    workers = {
        name: _queues(_command(container))
        for name, workload in workloads.items()
        for container in _containers(workload)
        if _command(container)[:4] == ["celery", "-A", "gennai", "worker"]
    }
    assert workers == WORKER_QUEUES
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    default = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    assert routed | {default} <= set().union(*workers.values()), "a queue no worker consumes"
    for name in WORKER_QUEUES:
        command = _command(_containers(workloads[name])[0])
        assert "--concurrency" in command, f"{name}: explicit concurrency (the default is the node's CPUs)"


def test_only_the_migration_job_and_the_maintenance_worker_hold_the_migration_login() -> None:
    workloads = _workloads(_base_objects())
    job = workloads["gennai-migrate"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert _command(migrate) == ["python", "manage.py", "migrate", "--no-input"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for name, workload in workloads.items():
        for container in _containers(workload):
            env = _env(container)
            url_key = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"]
            role = env.get("GENNAI_DB_APP_ROLE", {}).get("value")
            if name in MIGRATION_LOGIN:
                assert url_key == MIGRATION_URL_KEY, f"{name} needs the migration login"
                assert role == "gennai_app", f"{name}: SET ROLE gennai_app outside owner mode"
            else:
                assert url_key == APP_URL_KEY, f"{name} must log in as the application role"
                assert role == "", f"{name}: GENNAI_DB_APP_ROLE must be empty (already the app role)"


def test_env_names_exist_and_required_ones_are_provided() -> None:
    objects = _base_objects()
    settings_text = "\n".join(path.read_text(encoding="utf-8") for path in SETTINGS_DIR.glob("*.py"))
    required = _prod_required()
    assert "GENNAI_SECRET_KEY" in required and "DATABASE_URL" in required
    for name, workload in _workloads(objects).items():
        for container in _containers(workload):
            names = _env_names(container, objects)
            for variable in names - PROCESS_ENV:
                assert f'"{variable}"' in settings_text, (
                    f"{name}: {variable} is read by no gennai/settings module"
                )
            missing = set(required) - names
            assert not missing, f"{name} lacks {sorted(missing)} (gennai.settings.prod refuses to start)"
    infra_readme = (ROOT / "infra" / "README.md").read_text(encoding="utf-8")
    for variable in PROCESS_ENV:
        assert variable in infra_readme


def _is_secret_name(name: str) -> bool:
    if name in NOT_SECRETS:
        return False
    return (
        any(word in name for word in ("SECRET", "PASSWORD", "API_KEY", "TOKEN"))
        or name in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
        or name.startswith("GENNAI_UPSTREAM_VLLM_")
    )


def test_secrets_only_by_reference() -> None:
    objects = _base_objects()
    assert not _by_kind(objects, "Secret"), "no Secret in the manifests: the site creates it"
    for key in _config_data(objects):
        assert not _is_secret_name(key), f"ConfigMap holds {key}"
    for name, workload in _workloads(objects).items():
        for container in _containers(workload):
            for variable, entry in _env(container).items():
                if _is_secret_name(variable):
                    ref = entry.get("valueFrom", {}).get("secretKeyRef")
                    assert "value" not in entry and ref, f"{name}: {variable} only through secretKeyRef"
                    assert ref["name"] == SECRET


def test_the_config_map_is_accepted_by_the_settings() -> None:
    data = _config_data(_base_objects())
    assert data["OIDC_ISSUER"].startswith("https://"), "gennai.settings.prod refuses a non-https issuer"
    for key in ("GENNAI_UPSTREAM_ALLOWED_HOSTS", "GENNAI_UPSTREAM_ONPREM_HOSTS"):
        policy = EgressPolicy.parse(data[key].split(","))  # a malformed entry fails registry.E001
        assert policy.lists_url("http://vllm-llm-jp-4-8b.gennai-inference.svc:8000"), key
    assert data["GENNAI_SEARCH_BACKEND"] in {"postgres", "elasticsearch"}


# --- network policies ------------------------------------------------------------------


def test_network_policies_deny_by_default_and_admit_web_from_the_ingress_only() -> None:
    objects = _base_objects()
    policies = _by_kind(objects, "NetworkPolicy")
    deny = [
        policy
        for policy in policies.values()
        if policy["spec"]["podSelector"] == {}
        and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
    ]
    assert deny, "a default-deny NetworkPolicy (ingress and egress) for every pod"
    ingress_rules = [
        (name, rule) for name, policy in policies.items() for rule in policy["spec"].get("ingress", [])
    ]
    assert [name for name, _ in ingress_rules] == ["gennai-web-ingress"], "only web accepts traffic"
    web_policy = policies["gennai-web-ingress"]
    assert web_policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    for _, rule in ingress_rules:
        assert [port["port"] for port in rule["ports"]] == [8000]
        for peer in rule["from"]:
            assert peer.get("namespaceSelector", {}).get("matchLabels"), "from a labelled namespace only"
            assert "ipBlock" not in peer
    for name, policy in policies.items():
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to") and rule.get("ports"), f"{name}: egress to named peers and ports only"


def test_postgres_directly_only_for_the_migration_login_and_inference_for_its_clients() -> None:
    objects = _base_objects()
    policies = _by_kind(objects, "NetworkPolicy")
    direct = policies["gennai-egress-postgres-direct"]["spec"]["podSelector"]["matchExpressions"][0]["values"]
    assert set(direct) == {"migrate", "worker-maintenance"}
    inference = policies["gennai-egress-inference"]["spec"]
    (rule,) = inference["egress"]
    (peer,) = rule["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "gennai-inference"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm"}
    assert [port["port"] for port in rule["ports"]] == [8000]
    clients = {
        name
        for name, workload in _workloads(objects).items()
        if workload["spec"]["template"]["metadata"]["labels"].get("gennai.example.go.jp/inference-client")
        == "true"
    }
    # The label the vLLM NetworkPolicy admits (inference/render.py DEFAULT_GATEWAY_LABELS).
    assert inference["podSelector"]["matchLabels"] == {"gennai.example.go.jp/inference-client": "true"}
    assert clients == {"gennai-web", "gennai-worker", "gennai-worker-embed"}


# --- rendered (when kubectl is here) ------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_the_example_overlay_renders_and_keeps_its_guarantees() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0 and "unknown command" in result.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    overlay = _load(OVERLAY / "kustomization.yaml")[0]
    assert {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"} == {
        overlay["namespace"]
    }
    workloads = _workloads(objects)
    hosts = _config_data(objects)["GENNAI_ALLOWED_HOSTS"].split(",")
    for name, workload in workloads.items():
        _check_workload_security(name, workload)
        for container in _containers(workload):
            assert not container["image"].endswith(":set-by-overlay"), f"{name}: the overlay's tag"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    headers = container[probe]["httpGet"]["httpHeaders"]
                    assert next(h["value"] for h in headers if h["name"] == "Host") in hosts, (
                        f"{name} {probe}"
                    )
    assert workloads["gennai-beat"]["spec"]["replicas"] == 1
    web_peer = _by_kind(objects, "NetworkPolicy")["gennai-web-ingress"]["spec"]["ingress"][0]["from"][0]
    assert web_peer["namespaceSelector"]["matchLabels"] != {"kubernetes.io/metadata.name": "ingress-nginx"}, (
        "the overlay replaces the placeholder ingress namespace"
    )


def test_the_maintenance_worker_matches_docs_admin() -> None:
    """The README's commands and the manifests' agree (docs/admin.md names the maintenance worker's)."""
    admin = (ROOT / "docs" / "admin.md").read_text(encoding="utf-8")
    match = re.search(r"`(celery -A gennai worker -Q maintenance[^`]*)`", admin)
    assert match, "docs/admin.md documents the maintenance worker's command"
    documented = shlex.split(match.group(1))
    workloads = _workloads(_base_objects())
    command = _command(_containers(workloads["gennai-worker-maintenance"])[0])
    assert _queues(documented) == _queues(command)
    assert documented[documented.index("--concurrency") + 1] == command[command.index("--concurrency") + 1]
