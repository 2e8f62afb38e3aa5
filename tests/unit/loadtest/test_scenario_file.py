"""The scenario file format: strict parsing, errors that name the field, the worker config it yields."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.config import load_settings
from streams.sim import DEMO_SCENARIO, legacy_scenario
from streams.sim.scenario import (
    INCIDENT_KINDS,
    CategoricalFeature,
    NumericFeature,
    ScenarioError,
    deep_merge,
    load_scenario,
    parse_scenario,
)

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = [DEMO_SCENARIO, *sorted((ROOT / "loadtest" / "scenarios").glob("*.yaml"))]

BASE: dict[str, Any] = {
    "name": "t",
    "duration_s": 300,
    "models": [
        {"name": "a", "gpus": 1, "hosts": ["h1", "h2"]},
        {"name": "b", "versions": {"v1": 3, "v2": 1},
         "features": {"numeric": {"x": {"mean": 1, "std": 2, "weight": 1}},
                      "categorical": {"c": {"p": 1, "q": 3}}}},
    ],
    "incidents": [{"kind": "latency_spike", "model": "a", "at_s": 10, "duration_s": 20}],
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with ``value`` set at a dotted path (list indices as numbers); ``...`` deletes the key."""
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = raw
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    key: Any = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return raw


def test_base_parses_with_defaults_filled_in() -> None:
    s = parse_scenario(BASE)
    a, b = s.models
    assert a.hosts == ("h1", "h2") and a.versions == (("v1", 1.0),) and a.gpus == 1
    assert b.versions == (("v1", 0.75), ("v2", 0.25)) and b.hosts == ("b-srv-0",)
    assert b.numeric == (NumericFeature("x", 1.0, 2.0, 1.0),)
    assert b.categorical == (CategoricalFeature("c", ("p", "q"), (0.25, 0.75)),)
    (inc,) = s.incidents
    assert (inc.kind, inc.model, inc.at_s, inc.end_s, inc.params) == ("latency_spike", "a", 10.0, 30.0,
                                                                       {"factor": 40.0})
    assert inc.active(10.0) and not inc.active(30.0)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (with_("incidents.0.kind", "meteor"), "incidents[0].kind: must be one of feature_drift_abrupt"),
        (with_("incidents.0.model", "zz"), "incidents[0].model: no model of that name"),
        (with_("incidents.0.at_s", -1), "incidents[0].at_s: must be in [0"),
        (with_("incidents.0.at_s", 300), "incidents[0].at_s: starts at or after the end"),
        (with_("incidents.0.duration_s", 0), "incidents[0].duration_s: must be in (0"),
        (with_("incidents.0.duration_s", ...), "incidents[0].duration_s: required"),
        (with_("incidents.0.params", {"factr": 2}), "incidents[0].params.factr: unknown key (known: factor)"),
        (with_("incidents.0.params", {"factor": "x"}), "incidents[0].params.factor: expected a number"),
        (with_("incidents.0.when", 3), "incidents[0].when: unknown key"),
        (with_("incidents.0", {"kind": "gpu_saturation", "model": "b", "at_s": 1, "duration_s": 5}),
         "incidents[0].model: b has no GPU"),
        (with_("incidents.0", {"kind": "feature_drift_abrupt", "model": "b", "at_s": 1, "duration_s": 5,
                               "params": {"feature": "c"}}),
         "incidents[0].params.feature: expected a numeric feature of b (x)"),
        (with_("incidents.0", {"kind": "memory_leak", "model": "a", "at_s": 1, "duration_s": 5,
                               "params": {"hosts": ["h3"]}}),
         "incidents[0].params.hosts[0]: not a host of a"),
        (with_("incidents", {"kind": "silence"}), "incidents: expected a list"),
        (with_("models.0.rate_per_s", 0), "models[0].rate_per_s: must be in (0"),
        (with_("models.0.rate_per_s", True), "models[0].rate_per_s: expected a number"),
        (with_("models.0.name", "bad name"), "models[0].name: expected a name"),
        (with_("models.1.name", "a"), "models[1].name: 'a' is already a model"),
        (with_("models.0.label_delay_s", [5, 1]), "models[0].label_delay_s: the upper bound 1 is below"),
        (with_("models.0.hosts", 0), "models[0].hosts: must be in [1, 64]"),
        (with_("models.0.versions", {"v1": 0}), "models[0].versions.v1: must be in (0"),
        (with_("models.0.colour", "red"), "models[0].colour: unknown key"),
        (with_("models.1.features.numeric.x.std", 0), "models[1].features.numeric.x.std: must be in (0"),
        (with_("models.1.features.categorical.x", {"p": 1}),
         "models[1].features.categorical.x: already a numeric"),
        (with_("models", []), "models: expected a non-empty list"),
        (with_("duration_s", ...), "scenario.duration_s: required"),
        (with_("speed", 2), "scenario.speed: unknown key"),
        (with_("worker", {"bootstrap_servers": "x:1"}), "worker.bootstrap_servers: not a setting a scenario"),
        (with_("worker", {"detection": {"ops": {"silence_afterr": "1m"}}}),
         "worker.detection.ops.silence_afterr: unknown setting"),
        (with_("worker", {"detection": {"ops": {"silence_after": "soon"}}}),
         "worker.detection.ops.silence_after:"),
        (with_("worker", {"rules": [{"name": "x", "source": "signal", "kinds": ["silence"],
                                     "for": "1 min"}]}),
         "worker.rules[0].for:"),
        (with_("rule_overrides", {"nope": {"for": "1m"}}), "rule_overrides.nope: no rule of that name"),
        (with_("rule_overrides", {"silence": {"for": "soon"}}), "rule_overrides.silence.for:"),
        (with_("rule_overrides", {"silence": {"name": "x"}}), "rule_overrides.silence: may not change"),
        (with_("sdk", {"linger": 5}), "sdk.linger: unknown key"),
        (with_("sdk", {"batch_events": 501}), "sdk.batch_events: must be in [1, 500]"),
    ],
)
def test_errors_name_the_field(raw: dict[str, Any], error: str) -> None:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(raw)
    assert str(e.value).startswith(error), str(e.value)


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_every_kind_parses_with_its_defaults(kind: str) -> None:
    s = parse_scenario(with_("incidents.0", {"kind": kind, "model": "a", "at_s": 0, "duration_s": 1}))
    assert s.incidents[0].kind == kind and s.incidents[0].params  # defaults filled in


def test_drift_defaults_come_from_the_model() -> None:
    s = parse_scenario(with_("incidents.0", {"kind": "feature_drift_gradual", "model": "b", "at_s": 0,
                                             "duration_s": 1}))
    assert s.incidents[0].params == {"feature": "x", "shift_sd": 1.5, "categorical": "c", "mix": None}


def test_sdk_settings() -> None:
    assert parse_scenario({**BASE, "sdk": {"linger_ms": 250, "batch_events": 100}}).sdk == {
        "linger_ms": 250.0, "batch_events": 100}
    assert parse_scenario(BASE).sdk == {}


def test_model_defaults_apply_under_each_model() -> None:
    s = parse_scenario({**BASE, "model_defaults": {"rate_per_s": 7, "gpus": 2}})
    assert [(m.rate_per_s, m.gpus) for m in s.models] == [(7.0, 1), (7.0, 2)]


def test_worker_config_merges_and_patches_default_rules() -> None:
    raw = {**BASE, "worker": {"detection": {"ops": {"silence_after": "30s"}}},
           "rule_overrides": {"serving_error_rate": {"window": "1m", "for": "30s"}}}
    base = {"detection": {"ops": {"leak_window": "1h"}}, "log_level": "info"}
    cfg = parse_scenario(raw).worker_config(base)
    assert cfg["detection"] == {"ops": {"leak_window": "1h", "silence_after": "30s"}}
    assert cfg["log_level"] == "info"
    rule = next(r for r in cfg["rules"] if r["name"] == "serving_error_rate")
    assert rule["window"] == "1m" and rule["for"] == "30s" and rule["trigger"] == 0.05


def test_worker_config_is_what_the_worker_loads(tmp_path: Path) -> None:
    raw = {**BASE, "worker": {"detection": {"ops": {"silence_after": "30s"}}},
           "rule_overrides": {"serving_error_rate": {"for": "10s"}}}
    path = tmp_path / "driftline.yaml"
    path.write_text(yaml.safe_dump(parse_scenario(raw).worker_config()))
    s = load_settings(path, env={})
    assert s.detection.ops.silence_after_ms == 30_000
    assert next(r for r in s.alert_rules if r.name == "serving_error_rate").for_ms == 10_000


def test_deep_merge_replaces_lists_and_scalars() -> None:
    merged = deep_merge({"a": {"b": [1], "c": 1}}, {"a": {"b": [2]}, "d": 3})
    assert merged == {"a": {"b": [2], "c": 1}, "d": 3}


def test_with_total_rate_scales_every_model() -> None:
    s = parse_scenario({**BASE, "model_defaults": {"rate_per_s": 100}}).with_total_rate(50)
    assert [m.rate_per_s for m in s.models] == [25.0, 25.0]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenarios_parse(path: Path) -> None:
    s = load_scenario(path)
    assert s.incidents and all(i.end_s > i.at_s for i in s.incidents)


def test_all_incidents_has_every_kind_once_on_its_own_model_and_a_control() -> None:
    s = load_scenario(ROOT / "loadtest" / "scenarios" / "all_incidents.yaml")
    kinds = [i.kind for i in s.incidents]
    assert sorted(kinds) == sorted(INCIDENT_KINDS)
    touched = [i.model for i in s.incidents]
    assert len(set(touched)) == len(touched)
    assert [m.name for m in s.models if m.name not in touched] == ["control"]


def test_demo_is_short() -> None:
    s = load_scenario(DEMO_SCENARIO)
    assert s.duration_s <= 180 and 3 <= len(s.incidents) <= 4


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("duration_s: [")
    with pytest.raises(ScenarioError, match=r"bad\.yaml"):
        load_scenario(p)
    p.write_text(yaml.safe_dump(with_("incidents.0.kind", "x")))
    with pytest.raises(ScenarioError, match=r"bad.yaml: incidents\[0\].kind"):
        load_scenario(p)


def test_legacy_scenario_keeps_the_classic_simulation() -> None:
    s = legacy_scenario(models=2, rate_per_s=1000, duration_s=0, garbage_every_s=5, drift_after_s=90)
    assert [m.name for m in s.models] == ["model-0", "model-1"] and s.total_rate_per_s == 1000
    assert {(i.kind, i.model, i.at_s) for i in s.incidents} == {
        ("feature_drift_abrupt", "model-0", 90.0), ("concept_drift", "model-0", 90.0),
        ("malformed_flood", "model-0", 0.0)}
    assert not legacy_scenario(drift_after_s=0).incidents
