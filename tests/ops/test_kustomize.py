"""Every kustomize overlay renders, validates against the Kubernetes schemas, and configures a
worker that would start: only setting names the worker accepts, values it parses, a grace period
longer than its drain, probes on its health endpoints, and a locked-down pod."""

from __future__ import annotations

import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from worker.settings import SandboxBackend, SandboxIsolation, load_settings

from .support import REPO, accepted_env_names, secret_env_names, venv_tool

KUSTOMIZE = REPO / "_kustomize"
TARGETS = ["base", "overlays/local", "overlays/prod"]
# The oldest schema set kubernetes-validate ships; what we render must work there and later.
KUBERNETES_VERSION = "1.33.0"
DEFAULT_GRACEFUL_SHUTDOWN = 60.0


def render(target: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(venv_tool("kubectl")), "kustomize", str(KUSTOMIZE / target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def the_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(docs, "Deployment")
    return deployment


def the_worker(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = the_deployment(docs)["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = pod["containers"]
    (worker,) = [c for c in containers if c["name"] == "worker"]
    return worker


def settings_env(docs: list[dict[str, Any]], *, secret_value: str = "") -> dict[str, str]:
    """The environment the worker container would get: its ConfigMaps via envFrom, then `env`
    (which wins). Required Secret keys get `secret_value`; optional ones are left out."""
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(docs, "ConfigMap")}
    worker = the_worker(docs)
    env: dict[str, str] = {}
    for source in worker.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, "envFrom only from ConfigMaps; Secrets by secretKeyRef"
        assert ref["name"] in config_maps, f"envFrom names a missing ConfigMap {ref['name']}"
        env.update(config_maps[ref["name"]])
    for item in worker.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif not item["valueFrom"]["secretKeyRef"].get("optional", False):
            env[item["name"]] = secret_value
    return env


def set_names(docs: list[dict[str, Any]]) -> set[str]:
    worker = the_worker(docs)
    names = {item["name"] for item in worker.get("env", [])}
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(docs, "ConfigMap")}
    for source in worker.get("envFrom", []):
        names.update(config_maps[source["configMapRef"]["name"]])
    return names


def test_renders_and_validates_against_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _target, docs = rendered
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_uses_only_plain_kubernetes_kinds_and_commits_no_secret(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _target, docs = rendered
    plain = {
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    assert {d["kind"] for d in docs} <= plain


def test_every_environment_name_is_a_setting_the_worker_accepts(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _target, docs = rendered
    unknown = set_names(docs) - accepted_env_names()
    assert not unknown, f"names the worker ignores: {sorted(unknown)}"


def test_secret_settings_come_only_from_the_secret(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _target, docs = rendered
    for config_map in of_kind(docs, "ConfigMap"):
        leaked = set(config_map.get("data", {})) & secret_env_names()
        assert not leaked, f"{config_map['metadata']['name']} holds secrets: {leaked}"
    for item in the_worker(docs).get("env", []):
        if item["name"] in secret_env_names():
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "agent-runner-secrets" and ref["key"] == item["name"]


def test_the_configured_environment_loads_as_worker_settings(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _target, docs = rendered
    settings = load_settings(settings_env(docs, secret_value="a-placeholder-secret"))
    assert settings.observability.health_host == "0.0.0.0"
    assert str(settings.sandbox_root).startswith("/workspace/")
    assert str(settings.data_dir).startswith("/workspace/")


def test_termination_grace_outlasts_the_graceful_shutdown(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _target, docs = rendered
    env = settings_env(docs)
    drain = float(env.get("WORKER_GRACEFUL_SHUTDOWN_SECONDS", DEFAULT_GRACEFUL_SHUTDOWN))
    grace = the_deployment(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # Room after the drain to push final statuses and close connections.
    assert grace >= drain + 15, (grace, drain)


def test_pod_is_locked_down(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _target, docs = rendered
    pod = the_deployment(docs)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert "requests" in container["resources"] and "limits" in container["resources"]


def test_a_pod_running_local_sandboxes_can_isolate_them_and_insists(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    # bubblewrap needs user namespaces (blocked by the runtime's default seccomp and AppArmor
    # profiles) and a /proc it may mount; only a pod that runs commands itself loosens those,
    # and only inside a user namespace of its own.
    _target, docs = rendered
    settings = load_settings(settings_env(docs, secret_value="a-placeholder-secret"))
    pod = the_deployment(docs)["spec"]["template"]["spec"]
    worker_context = the_worker(docs)["securityContext"]
    profiles = (
        pod["securityContext"]["seccompProfile"]["type"],
        pod["securityContext"]["appArmorProfile"]["type"],
    )
    if settings.sandbox_backend is SandboxBackend.LOCAL:
        assert settings.sandbox_isolation is SandboxIsolation.REQUIRED, "no silent fallback"
        assert pod["hostUsers"] is False
        assert profiles == ("Unconfined", "Unconfined")
        assert worker_context["procMount"] == "Unmasked"
    else:
        assert pod.get("hostUsers", True) is True
        assert profiles == ("RuntimeDefault", "RuntimeDefault")
        assert worker_context.get("procMount", "Default") == "Default"


def test_writable_paths_are_empty_dir_volumes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _target, docs = rendered
    pod = the_deployment(docs)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in the_worker(docs)["volumeMounts"]}
    for path in ("/workspace", "/tmp"):
        assert path in mounts, f"{path} must be writable"
        assert "emptyDir" in volumes[mounts[path]]
    env = settings_env(docs)
    for name in ("SANDBOX_ROOT_DIR", "STIGMER_AGENT_RUNNER_DATA_DIR"):
        assert env[name].startswith("/workspace/"), name


def test_probes_hit_the_health_endpoints_on_the_health_port(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _target, docs = rendered
    worker = the_worker(docs)
    port = int(settings_env(docs)["HEALTH_PORT"])
    (health,) = [p for p in worker["ports"] if p["name"] == "health"]
    assert health["containerPort"] == port
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert worker["startupProbe"]["httpGet"]["path"] == "/livez"
    annotations = the_deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_prod_has_a_disruption_budget_and_an_autoscaler_for_the_worker() -> None:
    docs = render("overlays/prod")
    deployment = the_deployment(docs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert deployment["metadata"]["namespace"] == pdb["metadata"]["namespace"]


def test_prod_talks_tls_to_temporal_and_the_orchestrator_with_credentials() -> None:
    docs = render("overlays/prod")
    settings = load_settings(settings_env(docs, secret_value="a-placeholder-secret"))
    assert settings.temporal_tls and settings.temporal.api_key is not None
    assert settings.backend_tls and settings.uses_oauth


def test_overlays_change_only_what_differs_from_base() -> None:
    # Overlays are patches: every overlay file is referenced by its kustomization.
    for overlay in ("overlays/local", "overlays/prod"):
        directory = KUSTOMIZE / overlay
        kustomization = (directory / "kustomization.yaml").read_text()
        for path in directory.iterdir():
            if path.name != "kustomization.yaml":
                assert path.name in kustomization, f"{overlay}/{path.name} is not used"


def test_local_overlay_needs_no_credentials() -> None:
    docs = render("overlays/local")
    env = settings_env(docs)
    assert not (set(env) & secret_env_names())
    load_settings(env)
