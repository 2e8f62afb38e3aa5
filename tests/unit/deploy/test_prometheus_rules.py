"""deploy/prometheus: the rule files pass ``promtool check rules`` and their unit tests pass
``promtool test rules``; every alert is tested firing and not firing, every recording rule is
tested; every metric the rules and dashboards read is one the worker exports (or a rule records).

promtool comes from Debian's ``prometheus`` package (``make peers``); the tests that run it skip,
saying so, when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from streams.observability import OTHER_MODEL, DetectionExporter, MetricsExporter, PipelineMetrics

REPO = Path(__file__).resolve().parents[3]
PROM = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yaml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yaml"))
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus, or make peers)"
)


def promtool(*args: str, stdin: bytes | None = None) -> str:
    assert PROMTOOL is not None
    out = subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, timeout=120, cwd=REPO)
    text = out.stdout.decode() + out.stderr.decode()
    assert out.returncode == 0, text
    return text


def rules(kind: str) -> list[dict[str, Any]]:
    groups = [g for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]]
    return [r for g in groups for r in g["rules"] if kind in r]


@needs_promtool
def test_rule_files_pass_promtool_check_rules() -> None:
    assert [f.name for f in RULE_FILES] == ["driftline-alerts.yaml", "driftline-recording.yaml"]
    promtool("check", "rules", *map(str, RULE_FILES))


@needs_promtool
def test_rule_unit_tests_pass_promtool_test_rules() -> None:
    assert [f.name for f in TEST_FILES] == ["alerts_test.yaml", "recording_test.yaml"]
    text = promtool("test", "rules", *map(str, TEST_FILES))
    assert text.count("SUCCESS") == len(TEST_FILES), text


@needs_promtool
def test_local_prometheus_config_passes_promtool_check_config() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert [(PROM / f).resolve() for f in cfg["rule_files"]] == [f.resolve() for f in reversed(RULE_FILES)]
    assert "driftline-worker" in {j["job_name"] for j in cfg["scrape_configs"]}
    promtool("check", "config", str(PROM / "prometheus.yml"))


def test_every_alert_has_for_severity_and_annotations_with_a_runbook_section() -> None:
    runbook = (PROM / "RUNBOOK.md").read_text()
    sections = {m.lower() for m in re.findall(r"^## (\w+)$", runbook, re.M)}
    alerts = rules("alert")
    assert len(alerts) >= 15
    for a in alerts:
        assert a.get("for"), a["alert"]
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert a["labels"]["role"] in ("primary", "backstop") and a["labels"]["component"], a["alert"]
        assert {"summary", "description", "runbook"} <= set(a["annotations"]), a["alert"]
        anchor = a["annotations"]["runbook"].rpartition("#")[2]
        assert anchor == a["alert"].lower() and anchor in sections, a["alert"]
    # pipeline health is Prometheus' job alone; model health backs Driftline's own alerts up
    assert {a["alert"] for a in alerts if a["labels"]["role"] == "primary"} >= {
        "DriftlineWorkerDown", "DriftlineConsumerLagHigh", "DriftlineDeadLetterRateHigh",
        "DriftlineDetectionMonitorErrors", "DriftlineWorkerRestartLoop", "DriftlineNotifierDown",
    }
    assert {a["alert"] for a in alerts if a["labels"]["role"] == "backstop"} >= {
        "DriftlineModelErrorRatioHigh", "DriftlineModelLatencyP99High", "DriftlineModelAccuracyLow",
        "DriftlineDriftSignalsHigh", "DriftlineAnomalyScoreHigh",
    }


def test_every_alert_is_tested_firing_and_not_firing_and_every_recording_rule_is_tested() -> None:
    tests = yaml.safe_load((PROM / "tests" / "alerts_test.yaml").read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for a in rules("alert"):
        mine = [c for c in cases if c["alertname"] == a["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{a['alert']}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{a['alert']}: no test where it does not fire"
    rec_tests = yaml.safe_load((PROM / "tests" / "recording_test.yaml").read_text())["tests"]
    tested = {c["expr"] for t in rec_tests for c in t["promql_expr_test"]}
    assert {r["record"] for r in rules("record")} <= tested


def exposition() -> str:
    """The worker's metric families, with the new drift and alert series populated."""
    registry = CollectorRegistry()
    PipelineMetrics.create(registry)
    MetricsExporter.create(registry)
    det = DetectionExporter.create(registry)
    det.observe_signal({"kind": "data_drift", "detector": "ks", "model": "fraud", "model_version": "v1",
                        "feature": "amount", "active": True, "score": 0.4})
    det.observe_alert({"model": "fraud", "signal": "drift", "status": "firing", "severity": "warning"})
    return generate_latest(registry).decode()


def referenced_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:[a-z_]+:)?(?:driftline|process)_[a-z0-9_]+(?::[a-z0-9_]+)?\b", expr))


def test_every_metric_the_rules_and_dashboards_read_is_exported_or_recorded() -> None:
    text = exposition()
    exported = set()
    for name in re.findall(r"^# TYPE (\S+) (\w+)", text, re.M):
        exported.add(name[0])
        if name[1] == "histogram":
            exported |= {f"{name[0]}_bucket", f"{name[0]}_sum", f"{name[0]}_count"}
        if name[1] == "counter":
            exported.add(f"{name[0]}_total")
    recorded = {r["record"] for r in rules("record")}
    exprs = [r["expr"] for r in rules("record") + rules("alert")]
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        exprs += [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
        exprs += [v["definition"] for v in d["templating"]["list"] if v["type"] == "query"]
    unknown = {n for e in exprs for n in referenced_names(e)} - exported - recorded
    assert not unknown, sorted(unknown)
    assert {"driftline_drift_score", "driftline_alerts_total", "process_start_time_seconds"} <= exported


@needs_promtool
def test_new_metrics_pass_promtool_check_metrics() -> None:
    text = exposition()
    assert 'driftline_drift_score{detector="ks",feature="amount",model="fraud",version="v1"} 0.4' in text
    assert ('driftline_alerts_total{alertname="drift",model="fraud",severity="warning",status="firing"} 1.0'
            in text)
    promtool("check", "metrics", stdin=text.encode())


def test_drift_scores_and_alert_models_are_bounded() -> None:
    registry = CollectorRegistry()
    det = DetectionExporter.create(registry, max_drift_series=3, max_alert_models=2)
    for i in range(5):
        det.observe_signal({"kind": "data_drift", "detector": "psi", "model": "m", "model_version": "v1",
                            "feature": f"f{i}", "active": True, "score": float(i)})
    det.observe_signal({"kind": "concept_drift", "detector": "adwin", "model": "m", "active": True,
                        "score": 1.0})  # no feature: not a per-feature drift score
    det.observe_signal({"kind": "anomaly", "detector": "hst", "model": "m", "feature": "x", "active": True,
                        "score": 1.0})
    text = generate_latest(registry).decode()
    kept = set(re.findall(r'driftline_drift_score\{[^}]*feature="(\w+)"', text))
    assert kept == {"f2", "f3", "f4"}  # the least recently updated went
    for m in ("a", "b", "c", "d", "a"):
        det.observe_alert({"model": m, "signal": "drift", "status": "firing", "severity": "warning"})
    text = generate_latest(registry).decode()
    series = re.findall(r'driftline_alerts_total\{[^}]*model="(\w+)"[^}]*\} (\S+)', text)
    counted = {m: float(v) for m, v in series}
    assert counted == {"a": 2.0, "b": 1.0, OTHER_MODEL: 2.0}  # models past the bound share one series
