"""Tests of streams.core.alerting.rules: strict parsing with errors naming the field, defaults, templates."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streams.core.alerting.rules import (
    DEFAULT_RULES,
    DEFAULT_RULES_RAW,
    METRIC_PATHS,
    Rule,
    check_template,
    is_metric_path,
    parse_rules,
    render_template,
)

METRIC: dict[str, Any] = {
    "name": "errors",
    "source": "metric",
    "metric": "serving.error_rate",
    "window": "5m/1m",
    "op": ">",
    "trigger": 0.05,
}
SIGNAL: dict[str, Any] = {"name": "drift", "source": "signal", "kinds": ["data_drift"]}
GOOD = {"name": "x", "source": "signal", "kinds": ["anomaly"]}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not ...}


# (name, raw rules, the error must start with this)
ERRORS: list[tuple[str, Any, str]] = [
    ("not_a_list", {"name": "x"}, "rules: must be a list"),
    ("entry_not_mapping", [GOOD, "x"], "rules[1]: must be a mapping"),
    ("unknown_key", [GOOD, with_(METRIC, treshold=1)], "rules[1].treshold: unknown key"),
    (
        "metric_key_on_signal_rule",
        [with_(SIGNAL, trigger=1.0)],
        "rules[0].trigger: not a key of a signal rule",
    ),
    (
        "signal_key_on_metric_rule",
        [with_(METRIC, kinds=["anomaly"])],
        "rules[0].kinds: not a key of a metric rule",
    ),
    ("missing_source", [with_(METRIC, source=...)], "rules[0].source: must be metric or signal"),
    ("missing_name", [with_(METRIC, name=...)], "rules[0].name: required"),
    ("bad_name", [with_(METRIC, name="has space")], "rules[0].name: "),
    ("duplicate_name", [METRIC, GOOD, METRIC], "rules[2].name: 'errors' already names rules[0]"),
    (
        "bad_duration_unit",
        [GOOD, GOOD | {"name": "y", "for": "5 minutes"}],
        "rules[1].for: expected a positive",
    ),
    ("duration_number", [with_(METRIC, **{"for": 300})], "rules[0].for: must be 0 or a duration"),
    ("duration_bool", [with_(METRIC, **{"for": True})], "rules[0].for: must be 0 or a duration"),
    ("hold_zero", [with_(SIGNAL, hold=0)], "rules[0].hold: must be a duration"),
    ("hold_bad", [with_(SIGNAL, hold="30x")], "rules[0].hold: expected a positive duration"),
    ("trigger_string", [with_(METRIC, trigger="0.05")], "rules[0].trigger: must be a finite number"),
    ("trigger_bool", [with_(METRIC, trigger=True)], "rules[0].trigger: must be a finite number"),
    ("trigger_nan", [with_(METRIC, trigger=float("nan"))], "rules[0].trigger: must be a finite number"),
    ("trigger_missing", [with_(METRIC, trigger=...)], "rules[0].trigger: required for source metric"),
    ("clear_wrong_side_gt", [with_(METRIC, clear=0.06)], "rules[0].clear: must be at most trigger (0.05)"),
    ("clear_wrong_side_lt", [with_(METRIC, op="<", clear=0.01)], "rules[0].clear: must be at least trigger"),
    ("op_bad", [with_(METRIC, op=">=")], "rules[0].op: must be '>' or '<'"),
    ("op_missing", [with_(METRIC, op=...)], "rules[0].op: must be '>' or '<'"),
    ("metric_unknown", [with_(METRIC, metric="serving.latency.p99")], "rules[0].metric: unknown metric path"),
    ("metric_missing", [with_(METRIC, metric=...)], "rules[0].metric: unknown metric path None"),
    ("window_missing", [with_(METRIC, window=...)], "rules[0].window: required for source metric"),
    ("window_bad", [with_(METRIC, window="5m/2m")], "rules[0].window: window hop"),
    ("window_not_string", [with_(METRIC, window=5)], "rules[0].window: must be a string"),
    ("min_count_float", [with_(METRIC, min_count=1.5)], "rules[0].min_count: must be an integer"),
    ("min_count_negative", [with_(METRIC, min_count=-1)], "rules[0].min_count: must be an int >= 0"),
    ("kinds_empty", [with_(SIGNAL, kinds=[])], "rules[0].kinds: at least one of"),
    ("kinds_unknown", [with_(SIGNAL, kinds=["data_drift", "drfit"])], "rules[0].kinds[1]: must be one of"),
    ("kinds_not_list", [with_(SIGNAL, kinds="data_drift")], "rules[0].kinds: must be a list of strings"),
    ("models_not_list", [with_(SIGNAL, models="fraud")], "rules[0].models: must be a list of strings"),
    ("models_empty", [with_(SIGNAL, models=[])], "rules[0].models: must be a non-empty list"),
    ("detectors_empty_name", [with_(SIGNAL, detectors=[""])], "rules[0].detectors[0]: must be a string"),
    ("min_score_string", [with_(SIGNAL, min_score="high")], "rules[0].min_score: must be a finite number"),
    ("severity_bad", [with_(SIGNAL, severity="page")], "rules[0].severity: must be one of info, warning"),
    ("action_bad", [with_(SIGNAL, action="reboot")], "rules[0].action: must be one of rollback"),
    ("labels_not_mapping", [with_(SIGNAL, labels=["team"])], "rules[0].labels: must be a mapping"),
    ("labels_value_int", [with_(SIGNAL, labels={"team": 1})], "rules[0].labels.team: must be a string"),
    ("labels_reserved", [with_(SIGNAL, labels={"model": "x"})], "rules[0].labels.model: reserved"),
    ("labels_bad_name", [with_(SIGNAL, labels={"my-team": "x"})], "rules[0].labels.my-team: a label name"),
    (
        "annotation_unknown_field",
        [with_(SIGNAL, annotations={"summary": "{modle} drifted"})],
        "rules[0].annotations.summary: unknown field {modle}",
    ),
    (
        "annotation_attribute_access",
        [with_(SIGNAL, annotations={"summary": "{model.__class__.__init__}"})],
        "rules[0].annotations.summary: unknown field {model.__class__.__init__}",
    ),
    (
        "annotation_index_access",
        [with_(SIGNAL, annotations={"summary": "{model[0]}"})],
        "rules[0].annotations.summary: unknown field {model[0]}",
    ),
    (
        "annotation_positional",
        [with_(SIGNAL, annotations={"summary": "{} drifted"})],
        "rules[0].annotations.summary: unknown field {}",
    ),
    (
        "annotation_malformed",
        [with_(SIGNAL, annotations={"summary": "{model"})],
        "rules[0].annotations.summary: malformed template",
    ),
    (
        "annotation_nested_spec",
        [with_(SIGNAL, annotations={"summary": "{value:{threshold}}"})],
        "rules[0].annotations.summary: nested field",
    ),
    (
        "annotation_not_string",
        [with_(SIGNAL, annotations={"summary": 3})],
        "rules[0].annotations.summary: must be a string",
    ),
]


@pytest.mark.parametrize(("name", "raw", "prefix"), ERRORS, ids=[e[0] for e in ERRORS])
def test_parse_errors_name_the_field(name: str, raw: Any, prefix: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rules(raw)
    assert str(info.value).startswith(prefix), str(info.value)


def test_parse_full_metric_rule() -> None:
    (r,) = parse_rules(
        [
            {
                "name": "p99",
                "source": "metric",
                "models": ["fraud-*", "risk"],
                "metric": "serving.latency_ms.p99",
                "window": "300s/60s",
                "op": ">",
                "trigger": 1000,
                "clear": 800,
                "min_count": 100,
                "for": "5m",
                "hold": "1h",
                "severity": "critical",
                "labels": {"team": "risk"},
                "annotations": {"summary": "{model} p99 {value:.0f} ms", "runbook_url": "https://x/{model}"},
                "action": "scale_out",
            }
        ]
    )
    assert r.models == ("fraud-*", "risk") and r.window == "5m/1m"
    assert (r.trigger, r.clear, r.min_count, r.for_ms, r.hold_ms) == (1000.0, 800.0, 100, 300_000, 3_600_000)
    assert dict(r.labels) == {"team": "risk"} and r.action == "scale_out"


@pytest.mark.parametrize(
    ("raw_for", "ms"), [(0, 0), ("0", 0), ("30s", 30_000), ("5m", 300_000), ("2h", 7_200_000), ("250ms", 250)]
)
def test_for_durations(raw_for: Any, ms: int) -> None:
    assert parse_rules([with_(SIGNAL, **{"for": raw_for})])[0].for_ms == ms


def test_defaults_of_a_rule() -> None:
    (m,) = parse_rules([METRIC])
    assert (m.clear, m.for_ms, m.min_count, m.models, m.severity, m.action) == (
        0.05,
        0,
        0,
        ("*",),
        "warning",
        None,
    )
    assert m.hold_ms == 30 * 60_000
    (h,) = parse_rules([with_(METRIC, window="1h")])
    assert h.hold_ms == 3 * 3_600_000  # three hops of the window
    (s,) = parse_rules([SIGNAL])
    assert (s.hold_ms, s.detectors, s.min_score) == (30 * 60_000, (), None)


def test_rule_is_frozen_and_read_only() -> None:
    (r,) = parse_rules([with_(SIGNAL, labels={"team": "risk"})])
    with pytest.raises(AttributeError):
        r.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.labels["team"] = "x"  # type: ignore[index]
    assert hash(r) == hash(parse_rules([with_(SIGNAL, labels={"team": "risk"})])[0])


def test_rule_constructor_errors_use_attribute_names() -> None:
    with pytest.raises(ValueError, match=r"^for_ms: must be an int >= 0"):
        Rule("x", "signal", kinds=("anomaly",), for_ms=-1)
    with pytest.raises(ValueError, match=r"^hold_ms: must be a positive int"):
        Rule("x", "signal", kinds=("anomaly",), hold_ms=0)
    with pytest.raises(ValueError, match=r"^min_score: only for source signal"):
        Rule("x", "metric", metric="serving.count", window="1m", op="<", trigger=1.0, min_score=1.0)
    with pytest.raises(ValueError, match=r"^source: must be metric or signal"):
        Rule("x", "log")  # type: ignore[arg-type]


def test_default_rules() -> None:
    by_name = {r.name: r for r in DEFAULT_RULES}
    assert len(by_name) == len(DEFAULT_RULES) == len(DEFAULT_RULES_RAW)
    e = by_name["serving_error_rate"]
    assert (e.metric, e.window, e.op, e.trigger, e.clear, e.for_ms) == (
        "serving.error_rate",
        "5m/1m",
        ">",
        0.05,
        0.03,
        300_000,
    )
    p = by_name["serving_latency_p99"]
    assert (p.metric, p.trigger, p.clear, p.for_ms) == ("serving.latency_ms.p99", 1000.0, 800.0, 300_000)
    a = by_name["accuracy_low"]
    assert (a.op, a.trigger, a.for_ms, a.min_count) == ("<", 0.8, 600_000, 200)
    kinds = {k: r for r in DEFAULT_RULES for k in r.kinds}
    expected = {
        "data_drift": ("warning", "retrain"),
        "prediction_drift": ("warning", "retrain"),
        "multivariate_drift": ("warning", "retrain"),
        "concept_drift": ("critical", "rollback"),
        "anomaly": ("warning", "investigate"),
        "memory_leak": ("warning", "investigate"),
        "silence": ("critical", "investigate"),
        "gpu_saturation": ("warning", "scale_out"),
        "invalid_input": ("critical", "investigate"),
    }
    assert {k: (r.severity, r.action) for k, r in kinds.items()} == expected
    # Every default has a summary.
    assert all("summary" in r.annotations for r in DEFAULT_RULES)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("serving.error_rate", True),
        ("serving.latency_ms.p99", True),
        ("labels.classification.macro.f1", True),
        ("labels.regression.rmse", True),
        ("serving.rate_per_s", True),
        ("features.amount.missing_rate", True),
        ("features.a.b.mean", True),  # a feature name with a dot
        ("features..mean", False),
        ("features.amount.top", False),
        ("serving", False),
        ("labels.classification.confusion", False),
        ("serving.latency_ms.p999", False),
    ],
)
def test_metric_paths(path: str, ok: bool) -> None:
    assert is_metric_path(path) is ok
    assert (path in METRIC_PATHS) is (ok and not path.startswith("features."))


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("{model} {version}", {"model": "m", "version": ""}, "m"),
        ("{value:.1%}", {"value": 0.123}, "12.3%"),
        ("{value:.2f} > {threshold}", {"value": None, "threshold": 1.0}, "n/a > 1.0"),
        ("{value:.2f}", {"value": "abc"}, "abc"),  # a spec that does not suit is ignored
        ("{model!r}", {"model": "m"}, "'m'"),
        ("{{literal}} {model}", {"model": "m"}, "{literal} m"),
        ("{feature}", {}, "n/a"),
        ("a {host}  b\n  c {gpu}", {"host": "", "gpu": ""}, "a b\n  c"),
    ],
)
def test_render_template(template: str, values: dict[str, Any], expected: str) -> None:
    check_template(template)
    assert render_template(template, values) == expected


def test_render_is_not_eval() -> None:
    # Even unchecked, a value is never evaluated or traversed: format_map only looks names up.
    out = render_template("{model}", {"model": "{__import__('os').system('true')}"})
    assert out == "{__import__('os').system('true')}"
    with pytest.raises(ValueError, match=re.escape("unknown field {value.real}")):
        check_template("{value.real}")
