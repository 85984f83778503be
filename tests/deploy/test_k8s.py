"""deploy/k8s: kustomize renders, every object validates, and the pod is what the docs promise.

Rendering uses the real kustomize (`kubectl kustomize`). Built-in kinds are validated strictly
(unknown fields fail) by kubernetes-validate's offline OpenAPI schemas; the Prometheus Operator
kinds by the vendored structural subset of their CRD schemas (schemas/README.md).
"""

from __future__ import annotations

import base64
import copy
import json
from functools import cache
from typing import Any

import pytest

from tests.deploy.support import (
    DEPLOY,
    SCHEMAS,
    known_variables,
    load_yaml,
    load_yaml_all,
    run,
    settings_from,
    tool,
)

K8S = DEPLOY / "k8s"
OVERLAY = K8S / "overlays" / "example"
BASE = K8S / "base"
OLDEST_KUBERNETES = "1.29.0"
CRD_KINDS = {"PodMonitor", "PrometheusRule"}

Objects = list[dict[str, Any]]


@cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    kubectl = tool("kubectl", "kubectl ships kustomize; Debian/Ubuntu package kubectl")
    result = run([kubectl, "kustomize", path])
    assert result.returncode == 0, result.stderr
    return tuple(load_yaml_all(result.stdout))


@pytest.fixture(scope="module")
def overlay() -> Objects:
    return copy.deepcopy(list(render(str(OVERLAY))))


@pytest.fixture(scope="module")
def base() -> Objects:
    return copy.deepcopy(list(render(str(BASE))))


def one(objects: Objects, kind: str) -> dict[str, Any]:
    (found,) = [item for item in objects if item["kind"] == kind]
    return found


def pod_spec(objects: Objects) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: Objects) -> dict[str, Any]:
    (found,) = pod_spec(objects)["containers"]
    return dict(found)


# -- validation -----------------------------------------------------------------------------------


def _kubernetes_validate() -> Any:
    return pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")


def _crd_validators() -> dict[str, Any]:
    """One validator per Prometheus Operator kind, from the vendored subset schema."""
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    path = SCHEMAS / "prometheus-operator-v0.80.1-subset.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return {
        kind: jsonschema.Draft202012Validator({"$ref": f"#/$defs/{kind}", "$defs": schema["$defs"]})
        for kind in CRD_KINDS
    }


def validate(objects: Objects) -> list[str]:
    """Problems found in ``objects`` (empty: all valid), for the oldest and newest schemas."""
    kv = _kubernetes_validate()
    crds = _crd_validators()
    problems = []
    for item in objects:
        name = f"{item['kind']}/{item['metadata']['name']}"
        if item["kind"] in CRD_KINDS:
            for error in crds[item["kind"]].iter_errors(item):
                path = ".".join(str(part) for part in error.absolute_path)
                problems.append(f"{name}: {path}: {error.message}")
            continue
        for version in (OLDEST_KUBERNETES, kv.latest_version()):
            try:
                kv.validate(item, version, strict=True)
            except kv.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path)
                problems.append(f"{name} (Kubernetes {version}): {path}: {exc.message}")
    return problems


def test_overlay_renders_every_object_and_each_is_valid(overlay: Objects) -> None:
    kinds = sorted(item["kind"] for item in overlay)
    assert kinds == sorted(
        ["Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment",
         "PodDisruptionBudget", "PodMonitor", "PrometheusRule"]
    )  # fmt: skip
    assert validate(overlay) == []
    assert {
        item["metadata"].get("namespace") for item in overlay if item["kind"] != "Namespace"
    } == {"market-data"}


def test_base_renders_without_a_secret_and_is_valid(base: Objects) -> None:
    assert "Secret" not in {item["kind"] for item in base}  # the user provides it
    assert validate(base) == []


def test_base_files_are_plain_valid_manifests() -> None:
    """Each file of the base is valid on its own too (apply-able without kustomize)."""
    resources = load_yaml(BASE / "kustomization.yaml")["resources"]
    objects = [doc for name in resources for doc in load_yaml_all((BASE / name).read_text())]
    assert len(objects) == len(resources)
    assert validate(objects) == []


def test_validators_reject_mistakes(overlay: Objects) -> None:
    """Control: strict schemas catch a misspelt field, a wrong type and bad CRD fields."""

    def problems_after(change: Any) -> str:
        broken = copy.deepcopy(overlay)
        change(broken)
        return "\n".join(validate(broken))

    def misspell(objects: Objects) -> None:
        container_spec = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        container_spec["securityContext"]["readOnlyRootFileSystem"] = True

    def wrong_type(objects: Objects) -> None:
        one(objects, "Deployment")["spec"]["replicas"] = "one"

    def bad_monitor(objects: Objects) -> None:
        one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"

    def bad_rule(objects: Objects) -> None:
        one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"][0]["for"] = "a while"

    assert "readOnlyRootFileSystem" in problems_after(misspell)
    assert "'one' is not of type 'integer'" in problems_after(wrong_type)
    assert "'intervall' was unexpected" in problems_after(bad_monitor)
    assert "'a while' does not match" in problems_after(bad_rule)


# -- the Deployment -------------------------------------------------------------------------------


def test_one_replica_replaced_not_rolled(overlay: Objects) -> None:
    spec = one(overlay, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_probes(overlay: Objects) -> None:
    main = container(overlay)
    port_names = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert port_names == {"metrics": 9464}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_resources_have_requests_and_limits(overlay: Objects) -> None:
    resources = container(overlay)["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind


def test_pod_security_meets_the_restricted_standard(overlay: Objects) -> None:
    pod = pod_spec(overlay)
    main = container(overlay)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = main["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    for volume in pod["volumes"]:
        assert set(volume) & {"emptyDir", "secret", "configMap"}, f"not allowed: {volume}"
    namespace = one(overlay, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_tmp_is_an_empty_dir(overlay: Objects) -> None:
    volumes = {volume["name"]: volume for volume in pod_spec(overlay)["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container(overlay)["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def _config(objects: Objects) -> dict[str, str]:
    name = container(objects)["envFrom"][0]["configMapRef"]["name"]
    (config,) = [i for i in objects if i["kind"] == "ConfigMap" and i["metadata"]["name"] == name]
    data: dict[str, str] = config["data"]
    return data


def test_configmap_holds_valid_connector_settings(
    overlay: Objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _config(overlay)
    assert set(data) <= known_variables(), set(data) - known_variables()
    settings = settings_from(data, monkeypatch)
    assert settings.http_port == container(overlay)["ports"][0]["containerPort"]
    assert settings.api_key is None  # the key only ever comes from the mounted Secret
    grace = pod_spec(overlay)["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_timeout + 5, "leave time to drain after SIGTERM"
    assert settings.ack_mode == "consumer"
    assert settings.group_names == ("strategy",)


def test_api_key_comes_from_the_secret_as_a_file(overlay: Objects) -> None:
    data = _config(overlay)
    pod = pod_spec(overlay)
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (mount,) = [m for m in container(overlay)["volumeMounts"] if "secret" in volumes[m["name"]]]
    assert mount["readOnly"] is True
    secret_volume = volumes[mount["name"]]["secret"]
    (item,) = secret_volume["items"]
    assert data["CONNECTOR_API_KEY_FILE"] == f"{mount['mountPath']}/{item['path']}"
    assert secret_volume["defaultMode"] == 0o440  # readable by the fsGroup, nobody else
    assert pod["securityContext"]["fsGroup"] == 10001
    secret = one(overlay, "Secret")
    assert secret_volume["secretName"] == secret["metadata"]["name"]  # the generated name
    key = base64.b64decode(secret["data"][item["key"]]).decode()
    assert "NOT-A-REAL-KEY" in key, "the example overlay must ship an obviously fake key"
    for variable in container(overlay).get("env", []):
        assert variable["name"] not in ("CONNECTOR_API_KEY", "CONNECTOR_REDIS_PASSWORD")


def test_overlay_sets_the_image(overlay: Objects) -> None:
    assert container(overlay)["image"] == "registry.example.com/market-data/connector:1.0.0"


# -- selectors ------------------------------------------------------------------------------------


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_service_monitor_and_budget_select_the_pod(overlay: Objects) -> None:
    labels = one(overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]
    ports = {port["name"] for port in container(overlay)["ports"]}
    assert _matches(one(overlay, "Deployment")["spec"]["selector"], labels)
    service = one(overlay, "Service")["spec"]
    assert all(labels.get(key) == value for key, value in service["selector"].items())
    assert {port["targetPort"] for port in service["ports"]} <= ports
    monitor = one(overlay, "PodMonitor")["spec"]
    assert _matches(monitor["selector"], labels)
    assert {endpoint["port"] for endpoint in monitor["podMetricsEndpoints"]} <= ports
    assert [endpoint["path"] for endpoint in monitor["podMetricsEndpoints"]] == ["/metrics"]
    budget = one(overlay, "PodDisruptionBudget")["spec"]
    assert _matches(budget["selector"], labels)
    assert budget["maxUnavailable"] == 1


def test_prometheus_rule_carries_the_alert_rules(overlay: Objects) -> None:
    groups = one(overlay, "PrometheusRule")["spec"]["groups"]
    assert groups == load_yaml(DEPLOY / "prometheus" / "alerts.yaml")["groups"]
