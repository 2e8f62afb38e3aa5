"""The Kubernetes manifests, rendered offline and checked against schemas and against the code.

Every overlay (and the mTLS variant of prod) is rendered with Kustomize; each
resource is validated against the Kubernetes OpenAPI schemas (the
``kubernetes-validate`` package, strict: an unknown field fails) for the oldest
and newest Kubernetes minor we claim, or against the CRD schemas under
``deploy/kubernetes/schemas``. Then the manifests are checked against the code
they deploy: env variables are settings streams/config.py reads, container
args parse with the real CLI, the settings file loads, the KafkaTopics are
those of streams/topics.py, and KEDA scales the group and topics the worker
really uses, up to its partition count.
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams.app.factory import INPUT_TOPICS
from streams.cli import build_parser
from streams.config import Settings, load_settings
from streams.topics import resolved
from tests.unit.deploy.helpers import K8S, settings_env_names

# The oldest Kubernetes minor the manifests are written for (persistentVolumeClaimRetentionPolicy is
# on by default from 1.27; 1.29 is the oldest minor managed offerings still run) and the newest the
# schema package knows.
K8S_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
CRD_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic-kafka-v1beta2.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}
# The Secrets the manifests refer to; the README says how to create each. None is committed.
KNOWN_SECRETS = {"driftline-kafka", "driftline-kafka-ca", "driftline-kafka-tls", "driftline-notifier"}
APP_NAMESPACES = {"dev": "driftline-dev", "prod": "driftline", "prod-mtls": "driftline"}
UID = 10001
Rendered = tuple[str, list[dict[str, Any]]]


def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[(api_version, kind)]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Why ``doc`` does not validate (empty when it does), for every Kubernetes version we claim."""
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in CRD_SCHEMAS:
        return [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in crd_validator(*key).iter_errors(doc)]
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where} (Kubernetes {version}): {'/'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{where}: {e.message}")
    return errors


@pytest.fixture(scope="session")
def mtls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prod with components/kafka-mtls instead of kafka-scram, as the README tells one to do."""
    d = tmp_path_factory.mktemp("prod-mtls")
    prod = yaml.safe_load((K8S / "overlays" / "prod" / "kustomization.yaml").read_text())
    rel = os.path.relpath(K8S, d)  # kustomize refuses absolute paths
    prod["resources"] = [f"{rel}/base"]
    prod["components"] = [f"{rel}/components/{c}" for c in ("keda", "servicemonitor", "kafka-mtls")]
    for p in prod["patches"]:
        assert "path" not in p, "prod's patches are inline, so this copy can reuse them"
    (d / "kustomization.yaml").write_text(yaml.safe_dump(prod, sort_keys=False))
    (d / "driftline.yaml").write_text((K8S / "overlays" / "prod" / "driftline.yaml").read_text())
    return d


@pytest.fixture(params=["dev", "prod", "prod-mtls"])
def overlay(request: pytest.FixtureRequest, render: Callable[[Path], list[dict[str, Any]]],
            mtls_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    name = str(request.param)
    path = mtls_dir if name == "prod-mtls" else K8S / "overlays" / name
    return name, render(path)


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("StatefulSet", "Deployment"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def mounts_of(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def overlay_settings(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["name"].startswith("driftline-config-"), "generated: the name carries a hash"
    path = tmp_path / "driftline.yaml"
    path.write_text(cm["data"]["driftline.yaml"])
    return load_settings(path, env={})


# -- schemas ----------------------------------------------------------------------------------------

def test_every_rendered_resource_validates_against_its_schema(overlay: Rendered) -> None:
    name, docs = overlay
    errors = [e for d in docs for e in schema_errors(d)]
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_every_manifest_file_is_rendered_by_some_overlay(
        render: Callable[[Path], list[dict[str, Any]]], mtls_dir: Path) -> None:
    """So that validating the overlays validates every manifest in the tree."""
    rendered = {(d["kind"], d["metadata"]["name"])
                for path in (K8S / "overlays" / "dev", K8S / "overlays" / "prod", mtls_dir)
                for d in render(path)}
    not_resources = ("kustomization.yaml", "driftline.yaml")
    files = [p for p in (K8S / "base").glob("*.yaml") if p.name not in not_resources]
    files += [p for p in (K8S / "components").glob("*/*.yaml") if p.name != "kustomization.yaml"]
    assert files
    for path in files:
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            assert (doc["kind"], doc["metadata"]["name"]) in rendered, f"{path}: {doc['kind']} never rendered"


def test_the_validators_have_teeth(render: Callable[[Path], list[dict[str, Any]]]) -> None:
    """A misspelt field, a bad value, an unknown scaler option: each must fail."""
    docs = render(K8S / "overlays" / "prod")
    sts = copy.deepcopy(one(docs, "StatefulSet"))
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    topic = copy.deepcopy(one(docs, "KafkaTopic", "driftline.predictions"))
    topic["spec"]["partitions"] = 0
    scaled = copy.deepcopy(one(docs, "ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["lagThresold"] = "10"
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    for broken in (sts, topic, scaled, monitor):
        assert schema_errors(broken), f"{broken['kind']} should not validate"


# -- what every workload must be --------------------------------------------------------------------

def test_workloads_run_unprivileged_with_limits_and_probes(overlay: Rendered) -> None:
    name, docs = overlay
    for workload, spec in pod_specs(docs):
        where = f"{name}/{workload}"
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID and sc["fsGroup"] == UID, where
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False, where
            assert csc["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            assert "livenessProbe" in c and "startupProbe" in c, where
            tmp = [v for v, path in mounts_of(c).items() if path == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]], f"{where}: a writable /tmp (read-only root)"
            assert c["image"] != "driftline", f"{where}: the overlay sets the image"


def test_no_secret_is_committed_and_every_reference_is_documented(
        overlay: Rendered) -> None:
    name, docs = overlay
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created by hand, never rendered"
    referenced: set[str] = set()
    for _, spec in pod_specs(docs):
        referenced |= {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        for c in spec["containers"]:
            referenced |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                           if "secretKeyRef" in e.get("valueFrom", {})}
    for d in docs:
        if d["kind"] == "TriggerAuthentication":
            referenced |= {r["name"] for r in d["spec"]["secretTargetRef"]}
    assert referenced <= KNOWN_SECRETS, f"{name}: undocumented Secrets {referenced - KNOWN_SECRETS}"


# -- the manifests against the code -----------------------------------------------------------------

def test_env_args_and_settings_file_are_what_the_code_reads(overlay: Rendered,
                                                          tmp_path: Path) -> None:
    name, docs = overlay
    settings = overlay_settings(docs, tmp_path)  # loads: every setting valid, every field known
    known = settings_env_names()
    config_map = one(docs, "ConfigMap")["metadata"]["name"]
    for workload, spec in pod_specs(docs):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            env, mounts = env_of(c), mounts_of(c)
            driftline_vars = {k for k in env if k.startswith("DRIFTLINE_")}
            assert driftline_vars <= known, f"{name}/{workload}: unknown settings {driftline_vars - known}"
            build_parser().parse_args(c["args"])  # a real command line of the real CLI
            config = [v for v, vol in volumes.items() if vol.get("configMap", {}).get("name") == config_map]
            assert env["DRIFTLINE_CONFIG"] == posixpath.join(mounts[config[0]], "driftline.yaml")
            assert env["DRIFTLINE_WEB_HOST"] == "0.0.0.0", "probes and Prometheus come from outside the pod"
            for var in ("DRIFTLINE_KAFKA_SSL_CA_FILE", "DRIFTLINE_KAFKA_SSL_CERT_FILE",
                        "DRIFTLINE_KAFKA_SSL_KEY_FILE", "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE"):
                if var in env:  # the file is on a mounted Secret
                    assert any(env[var].startswith(p + "/") for p in mounts.values()), f"{var}: not mounted"
    notifier = one(docs, "Deployment", "driftline-notifier")["spec"]["template"]["spec"]
    state = {v["name"] for v in notifier["volumes"] if "persistentVolumeClaim" in v}
    delivery_log = settings.extra["notify"]["delivery_log"]
    assert posixpath.dirname(delivery_log) in {mounts_of(notifier["containers"][0])[v] for v in state}


def test_worker_statefulset_probes_state_and_disruption_budget(overlay: Rendered,
                                                                tmp_path: Path) -> None:
    name, docs = overlay
    settings = overlay_settings(docs, tmp_path)
    sts = one(docs, "StatefulSet", "driftline-worker")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert spec["podManagementPolicy"] == "Parallel"
    assert pod["terminationGracePeriodSeconds"] >= 30, "time to commit and leave the group"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == settings.web_port
    ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/ready", "http")
    assert (live["path"], live["port"]) == ("/healthz", "http")
    claims = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    assert env_of(c)["DRIFTLINE_DATA_DIR"] in {mounts_of(c)[v] for v in claims}, "faust's data dir persists"
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    svc = one(docs, "Service", spec["serviceName"])
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["selector"].items() <= pod_labels.items()
    assert {p["name"] for p in svc["spec"]["ports"]} >= {"http"}
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "KafkaTopic"}
    assert namespaces == {APP_NAMESPACES[name]}


def test_topics_are_those_of_streams_topics(overlay: Rendered, tmp_path: Path) -> None:
    name, docs = overlay
    settings = overlay_settings(docs, tmp_path)
    topics = {d["spec"]["topicName"]: d for d in docs if d["kind"] == "KafkaTopic"}
    expected = {n: (p, spec.kafka_config()) for n, p, spec in resolved(settings)}
    assert set(topics) == set(expected)
    for topic, (partitions, config) in expected.items():
        t = topics[topic]
        assert (t["spec"]["partitions"], t["spec"]["config"]) == (partitions, config), topic
        assert t["spec"]["replicas"] == settings.replication_factor, topic
        assert t["metadata"]["labels"]["strimzi.io/cluster"], "the Topic Operator selects on it"
        assert t["metadata"]["namespace"] != APP_NAMESPACES[name], "the Topic Operator's namespace"


def test_keda_scales_the_workers_group_on_its_input_topics(overlay: Rendered,
                                                            tmp_path: Path) -> None:
    name, docs = overlay
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    if name == "dev":
        assert not scaled, "dev needs no KEDA"
        return
    settings = overlay_settings(docs, tmp_path)
    so = scaled[0]["spec"]
    target = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "driftline-worker"}
    assert so["scaleTargetRef"] == target
    assert "replicas" not in one(docs, "StatefulSet")["spec"], "the HPA owns the replica count"
    assert 1 <= so["minReplicaCount"] <= so["maxReplicaCount"] == settings.partitions
    triggers = so["triggers"]
    assert {t["metadata"]["topic"] for t in triggers} == {settings.topic(t) for t in INPUT_TOPICS}
    worker = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    protocol = env_of(worker).get("DRIFTLINE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    auths = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    for t in triggers:
        m = t["metadata"]
        assert t["type"] == "kafka"
        assert m["consumerGroup"] == settings.app_id and m["bootstrapServers"] == settings.bootstrap_servers
        assert int(m["lagThreshold"]) > 0 and m["allowIdleConsumers"] == "false"
        tls = protocol in ("SSL", "SASL_SSL")
        assert (m.get("tls") == "enable") == tls, "KEDA connects like the worker"
        assert (m.get("sasl") == "scram_sha512") == (protocol == "SASL_SSL")
        if protocol != "PLAINTEXT":
            assert t["authenticationRef"]["name"] in auths


def test_servicemonitor_scrapes_the_worker_metrics_port(overlay: Rendered) -> None:
    name, docs = overlay
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if name == "dev":
        assert not monitors
        return
    sm = monitors[0]["spec"]
    svc = one(docs, "Service", "driftline-worker")
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in sm["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    assert {e["path"] for e in sm["endpoints"]} == {"/metrics"}


def test_names_match_what_the_prometheus_rules_select(render: Callable[[Path], list[dict[str, Any]]]) -> None:
    """deploy/prometheus's rules select the worker by job (the ServiceMonitor's job is the Service's
    name) and the notifier's Deployment by name (kube-state-metrics)."""
    import re

    rules = "\n".join(p.read_text() for p in (K8S.parent / "prometheus" / "rules").glob("*.yaml"))
    jobs = set(re.findall(r'job="([^"]+)"', rules))
    deployments = set(re.findall(r'deployment=~"([^"]+)"', rules))
    docs = render(K8S / "overlays" / "prod")
    assert one(docs, "Service")["metadata"]["name"] in jobs
    notifier = one(docs, "Deployment")["metadata"]["name"]
    assert deployments and all(re.fullmatch(d, notifier) for d in deployments)
