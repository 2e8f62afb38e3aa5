"""Tests of inhibition and silences: matcher semantics, validation, and hold/release through the lifecycle."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.core.alerting.inhibit import DEFAULT_INHIBITIONS, Inhibitor, InhibitRule, parse_inhibit_rules
from streams.core.alerting.lifecycle import fingerprint
from streams.core.alerting.rules import DEFAULT_RULES, Rule
from streams.core.alerting.silences import Matcher, Silence, SilenceSet
from tests.unit.core.alerting.test_lifecycle import HOUR, MIN, Harness, check_event, sig, snap

# -- matchers -----------------------------------------------------------------------------------------

MATCHERS: list[tuple[Matcher, dict[str, str], bool]] = [
    (Matcher("model", "fraud"), {"model": "fraud"}, True),
    (Matcher("model", "fraud"), {"model": "fraud2"}, False),
    (Matcher("model", "fraud", is_equal=False), {"model": "fraud2"}, True),
    (Matcher("model", "fraud", is_equal=False), {}, True),
    (Matcher("model", ""), {}, True),  # a missing label reads as ""
    (Matcher("model", "fr.*", is_regex=True), {"model": "fraud"}, True),
    (Matcher("model", "fr", is_regex=True), {"model": "fraud"}, False),  # anchored
    (Matcher("model", "a|b", is_regex=True), {"model": "ab"}, False),  # anchored around the alternation
    (Matcher("model", "a|b", is_regex=True), {"model": "b"}, True),
    (Matcher("kind", ".*drift", is_regex=True, is_equal=False), {"kind": "data_drift"}, False),
    (Matcher("kind", ".*drift", is_regex=True, is_equal=False), {"kind": "silence"}, True),
]


@pytest.mark.parametrize(("m", "labels", "expected"), MATCHERS)
def test_matcher(m: Matcher, labels: dict[str, str], expected: bool) -> None:
    assert m.matches(labels) is expected
    assert Matcher.parse(str(m)) == m


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model=fraud", Matcher("model", "fraud")),
        ('model = "fraud detector"', Matcher("model", "fraud detector")),
        ("model!=fraud", Matcher("model", "fraud", is_equal=False)),
        ("kind=~'.*drift'", Matcher("kind", ".*drift", is_regex=True)),
        ("kind!~.*drift", Matcher("kind", ".*drift", is_regex=True, is_equal=False)),
        ("a=b=c", Matcher("a", "b=c")),
    ],
)
def test_matcher_parse(text: str, expected: Matcher) -> None:
    assert Matcher.parse(text) == expected


@pytest.mark.parametrize(
    ("make", "prefix"),
    [
        (lambda: Matcher("1model", "x"), "name: a label name"),
        (lambda: Matcher("model", "(", is_regex=True), "value: invalid regex '('"),
        (lambda: Matcher("model", 3), "value: must be a string"),  # type: ignore[arg-type]
        (lambda: Matcher("model", "x", is_regex="yes"), "is_regex: must be a boolean"),  # type: ignore[arg-type]
        (lambda: Matcher.parse("model"), "expected name=value"),
    ],
)
def test_matcher_errors(make: Any, prefix: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value).startswith(prefix), str(info.value)


# -- silences -----------------------------------------------------------------------------------------

RAW: dict[str, Any] = {
    "v": 1,
    "id": "maint-42",
    "matchers": [
        {"name": "model", "value": "fraud"},
        {"name": "alertname", "value": "drift|silence", "is_regex": True},
    ],
    "starts_at_ms": 1_000,
    "ends_at_ms": 10_000,
    "created_by": "ops@acme",
    "comment": "retraining",
}


def raw_with(**changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**RAW, **changes}.items() if v is not ...}


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        ([], "silence: must be an object"),
        (raw_with(extra=1), "extra: unknown field"),
        (raw_with(v=2), "v: expected 1"),
        (raw_with(comment=...), "comment: missing field"),
        (raw_with(id="bad id"), "id: 1 to 128 characters"),
        (raw_with(matchers=[]), "matchers: at least one matcher"),
        (raw_with(matchers={"name": "x"}), "matchers: must be a list"),
        (raw_with(matchers=[RAW["matchers"][0], "model=x"]), "matchers[1]: must be an object"),
        (
            raw_with(matchers=[{"name": "model", "value": "(", "is_regex": True}]),
            "matchers[0].value: invalid regex",
        ),
        (raw_with(matchers=[{"name": "model", "valeu": "x"}]), "matchers[0].valeu: unknown field"),
        (raw_with(matchers=[{"name": "model"}]), "matchers[0].value: missing field"),
        (
            raw_with(matchers=[{"name": "model", "value": ".*", "is_regex": True}]),
            "matchers: at least one matcher must not match the empty string",
        ),
        (
            raw_with(matchers=[{"name": "model", "value": ""}]),
            "matchers: at least one matcher must not match",
        ),
        (raw_with(ends_at_ms=1_000), "ends_at_ms: must be after starts_at_ms (1000), got 1000"),
        (raw_with(starts_at_ms=-1), "starts_at_ms: must be an integer of milliseconds"),
        (raw_with(ends_at_ms=1e12), "ends_at_ms: must be an integer of milliseconds"),
        (raw_with(created_by=" "), "created_by: must be a non-empty string"),
    ],
)
def test_silence_validation_errors(raw: Any, prefix: str) -> None:
    with pytest.raises(ValueError) as info:
        Silence.from_json(raw)
    assert str(info.value).startswith(prefix), str(info.value)


def test_silence_json_round_trip() -> None:
    s = Silence.from_json(RAW)
    assert s.matchers[1] == Matcher("alertname", "drift|silence", is_regex=True)
    assert Silence.decode(s.encode()) == s
    assert s.to_json() == {
        **RAW,
        "matchers": [m | {"is_regex": m.get("is_regex", False), "is_equal": True} for m in RAW["matchers"]],
    }
    with pytest.raises(ValueError, match=r"^silence: not JSON"):
        Silence.decode(b"{")


@pytest.mark.parametrize(
    ("labels", "now_ms", "muted"),
    [
        ({"model": "fraud", "alertname": "drift"}, 999, False),  # not started
        ({"model": "fraud", "alertname": "drift"}, 1_000, True),
        ({"model": "fraud", "alertname": "silence"}, 9_999, True),
        ({"model": "fraud", "alertname": "drift"}, 10_000, False),  # ended
        ({"model": "fraud", "alertname": "errors"}, 5_000, False),  # one matcher fails
        ({"model": "other", "alertname": "drift"}, 5_000, False),
    ],
)
def test_silence_mutes(labels: dict[str, str], now_ms: int, muted: bool) -> None:
    ss = SilenceSet([Silence.from_json(RAW)])
    assert ss.mutes(labels, now_ms) is muted
    assert ss.muted_by(labels, now_ms) == (["maint-42"] if muted else [])


def test_silence_set_control_topic() -> None:
    ss = SilenceSet()
    s = ss.apply(b"maint-42", orjson.dumps(RAW), now_ms=0)
    assert s is not None and len(ss) == 1 and [x.id for x in ss.active(2_000)] == ["maint-42"]
    # An edit: the same key with new content replaces it.
    ss.apply("maint-42", orjson.dumps(raw_with(ends_at_ms=3_000)), now_ms=0)
    assert ss.get("maint-42") is not None and ss.get("maint-42").ends_at_ms == 3_000  # type: ignore[union-attr]
    # A tombstone expires it.
    ended = ss.apply(b"maint-42", None, now_ms=2_000)
    assert ended is not None and ended.ends_at_ms == 2_000 and len(ss) == 0
    assert ss.apply(b"unknown", None, now_ms=2_000) is None
    with pytest.raises(ValueError, match=r"^silence 'other': id: the record key is 'other'"):
        ss.apply(b"other", orjson.dumps(RAW), now_ms=0)
    with pytest.raises(ValueError, match=r"^silence 'maint-42': ends_at_ms: "):
        ss.apply(b"maint-42", orjson.dumps(raw_with(ends_at_ms=0)), now_ms=0)


def test_silence_set_expire_and_prune() -> None:
    ss = SilenceSet(
        [
            Silence.from_json(RAW),
            Silence.from_json(raw_with(id="later", starts_at_ms=50_000, ends_at_ms=60_000)),
        ]
    )
    pending = ss.expire("later", now_ms=5_000)
    assert pending is not None and pending.starts_at_ms == 50_000  # never started: returned as it was
    assert ss.expire("maint-42", now_ms=1_000) is not None  # at its very start: still a valid silence
    ss.add(Silence.from_json(RAW))
    assert ss.prune(9_999) == [] and ss.prune(10_000) == ["maint-42"] and len(ss) == 0


# -- inhibition rules -------------------------------------------------------------------------------


def labels_of(alertname: str, **kw: str) -> dict[str, str]:
    return {"alertname": alertname, "model": "m", **kw}


PRED_SILENCE = labels_of("silence", kind="silence", stream="predictions", model_version="v1")
TELE_SILENCE = labels_of("silence", kind="silence", stream="telemetry", host="h1")
INVALID = labels_of("invalid_input")
DRIFT = labels_of("drift", kind="data_drift", model_version="v1", feature="amount")
CONCEPT = labels_of("concept_drift", kind="concept_drift", model_version="v1")
ERRORS = labels_of("serving_error_rate", metric="serving.error_rate", model_version="v1")
SERVING_ANOMALY = labels_of("anomaly", kind="anomaly", model_version="v1", subject="serving")
HOST_ANOMALY = labels_of("anomaly", kind="anomaly", host="h1")
LEAK_H1 = labels_of("memory_leak", kind="memory_leak", host="h1")
LEAK_H2 = labels_of("memory_leak", kind="memory_leak", host="h2")

# (name, target, firing, inhibited by the defaults)
DEFAULT_CASES: list[tuple[str, dict[str, str], list[dict[str, str]], bool]] = [
    ("nothing_firing", DRIFT, [], False),
    ("pred_silence_mutes_drift", DRIFT, [PRED_SILENCE], True),
    ("pred_silence_mutes_concept", CONCEPT, [PRED_SILENCE], True),
    ("pred_silence_mutes_metric", ERRORS, [PRED_SILENCE], True),
    ("pred_silence_mutes_serving_anomaly", SERVING_ANOMALY, [PRED_SILENCE], True),
    ("pred_silence_other_model", DRIFT, [PRED_SILENCE | {"model": "other"}], False),
    (
        "retired_version_silence_does_not_mute_new_version",
        DRIFT | {"model_version": "v2"},
        [PRED_SILENCE],
        False,
    ),
    ("pred_silence_not_itself", PRED_SILENCE, [PRED_SILENCE], False),
    ("pred_silence_not_leak", LEAK_H1, [PRED_SILENCE], False),
    ("tele_silence_mutes_host_anomaly", HOST_ANOMALY, [TELE_SILENCE], True),
    ("tele_silence_mutes_leak_same_host", LEAK_H1, [TELE_SILENCE], True),
    ("tele_silence_not_other_host", LEAK_H2, [TELE_SILENCE], False),
    ("tele_silence_not_metric", ERRORS, [TELE_SILENCE], False),
    ("tele_silence_not_drift", DRIFT, [TELE_SILENCE], False),
    ("invalid_input_mutes_drift", DRIFT, [INVALID], True),
    ("invalid_input_mutes_concept", CONCEPT, [INVALID], True),
    ("invalid_input_not_metric", ERRORS, [INVALID], False),
    ("invalid_input_other_model", DRIFT, [INVALID | {"model": "other"}], False),
    ("drift_mutes_nothing", ERRORS, [DRIFT, CONCEPT, LEAK_H1], False),
]


@pytest.mark.parametrize(
    ("name", "target", "firing", "inhibited"), DEFAULT_CASES, ids=[c[0] for c in DEFAULT_CASES]
)
def test_default_inhibitions(
    name: str, target: dict[str, str], firing: list[dict[str, str]], inhibited: bool
) -> None:
    inh = Inhibitor()
    assert inh.rules == DEFAULT_INHIBITIONS
    assert inh.inhibited(target, iter(firing)) is inhibited
    assert bool(inh.inhibited_by(target, firing)) is inhibited


def test_two_sided_match_does_not_inhibit_mutually() -> None:
    # Alertmanager: an alert matching both sides is not inhibited by alerts matching both sides.
    rule = InhibitRule({"severity": "critical"}, {}, ("model",), target_match_re={"alertname": ".+"})
    a = {"alertname": "a", "model": "m", "severity": "critical"}
    b = {"alertname": "b", "model": "m", "severity": "critical"}
    w = {"alertname": "w", "model": "m", "severity": "warning"}
    assert rule.inhibits(a, [b]) == [] and rule.inhibits(b, [a]) == []
    assert rule.inhibits(w, [a, b]) == [a, b]


def test_equal_labels_missing_on_both_sides_are_equal() -> None:
    rule = InhibitRule({"alertname": "src"}, {"alertname": "dst"}, ("model", "cluster"))
    assert rule.inhibits({"alertname": "dst", "model": "m"}, [{"alertname": "src", "model": "m"}])
    assert not rule.inhibits(
        {"alertname": "dst", "model": "m"}, [{"alertname": "src", "model": "m", "cluster": "a"}]
    )


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        ({}, "inhibit_rules: must be a list"),
        ([3], "inhibit_rules[0]: must be a mapping"),
        ([{"source_match": {"a": "b"}, "target": {}}], "inhibit_rules[0].target: unknown key"),
        ([{"target_match": {"a": "b"}}], "inhibit_rules[0].source_match: at least one source matcher"),
        ([{"source_match": {"a": "b"}}], "inhibit_rules[0].target_match: at least one target matcher"),
        (
            [{"source_match": {"a": "b"}, "target_match": {"c": "d"}, "equal": "model"}],
            "inhibit_rules[0].equal: must",
        ),
        (
            [{"source_match": {"a": "b"}, "target_match": {"c": "d"}, "equal": ["1x"]}],
            "inhibit_rules[0].equal[0]:",
        ),
        (
            [{"source_match": {"a-b": "x"}, "target_match": {"c": "d"}}],
            "inhibit_rules[0].source_match.a-b: name:",
        ),
        ([{"source_match": {"a": 1}, "target_match": {"c": "d"}}], "inhibit_rules[0].source_match.a: value:"),
        (
            [{"source_match": {"a": "b"}, "target_match_re": {"c": "[z"}}],
            "inhibit_rules[0].target_match_re.c:",
        ),
    ],
)
def test_parse_inhibit_rule_errors(raw: Any, prefix: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_inhibit_rules(raw)
    assert str(info.value).startswith(prefix), str(info.value)


# -- through the lifecycle: hold and release ----------------------------------------------------------


def statuses(events: list[dict[str, Any]]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(e["signal"], e["status"], tuple(e["evidence"].get("muted_by", ()))) for e in events]


def test_silence_holds_and_releases() -> None:
    h = Harness(DEFAULT_RULES, repeat_interval_ms=HOUR)
    h.lc.silences.add(Silence("deploy", (Matcher("model", "m"),), 0, 20 * MIN, "ops", "planned deploy"))
    drift = sig("data_drift", True, MIN, feature="amount")
    assert statuses(h.signal(drift, MIN)) == [("drift", "firing", ("silence:deploy",))]
    assert h.tick(19 * MIN) == []
    # The silence ended: the next tick announces the alert, unmuted, once.
    assert statuses(h.tick(20 * MIN)) == [("drift", "firing", ())]
    assert h.tick(21 * MIN) == []
    (res,) = h.signal(sig("data_drift", False, 25 * MIN, feature="amount"), 25 * MIN)
    assert statuses([res]) == [("drift", "resolved", ())]
    assert {e["starts_at_ms"] for e in h.events} == {MIN}


def test_muted_throughout_resolves_muted_and_is_still_tracked() -> None:
    h = Harness(DEFAULT_RULES, repeat_interval_ms=20 * MIN)
    h.lc.silences.add(
        Silence("s1", (Matcher.parse("alertname=~concept_drift|drift"),), 0, 10 * HOUR, "ops", "x")
    )
    assert statuses(h.signal(sig("concept_drift", True, 0), 0)) == [
        ("concept_drift", "firing", ("silence:s1",))
    ]
    assert statuses(h.tick(20 * MIN)) == [
        ("concept_drift", "firing", ("silence:s1",))
    ]  # repeats carry it too
    (res,) = h.tick(40 * MIN)  # hold (30 min) expired: resolves normally, muted like its firing
    assert statuses([res]) == [("concept_drift", "resolved", ("silence:s1",))]


def test_silence_added_after_notification_does_not_hide_the_resolve() -> None:
    h = Harness(DEFAULT_RULES, repeat_interval_ms=20 * MIN)
    assert statuses(h.signal(sig("concept_drift", True, 0), 0)) == [("concept_drift", "firing", ())]
    h.lc.silences.add(Silence("ack", (Matcher("model", "m"),), MIN, 10 * HOUR, "ops", "acknowledged"))
    assert statuses(h.tick(20 * MIN)) == [("concept_drift", "firing", ("silence:ack",))]
    # The last firing event was muted: its resolve is muted too.
    assert statuses(h.tick(40 * MIN)) == [("concept_drift", "resolved", ("silence:ack",))]
    h2 = Harness(DEFAULT_RULES, repeat_interval_ms=HOUR)
    h2.signal(sig("concept_drift", True, 0), 0)
    h2.lc.silences.add(Silence("ack", (Matcher("model", "m"),), MIN, 10 * HOUR, "ops", "acknowledged"))
    # Resolved before any muted repeat: the notified firing gets its notified resolve.
    assert statuses(h2.tick(30 * MIN)) == [("concept_drift", "resolved", ())]


def test_inhibition_holds_and_releases() -> None:
    h = Harness(DEFAULT_RULES, repeat_interval_ms=4 * HOUR)
    silent = {"stream": "predictions"}
    (src,) = h.signal(sig("silence", True, 0, labels=silent, score=130_000.0), 0)
    (drift,) = h.signal(sig("data_drift", True, MIN, feature="amount"), MIN)
    assert drift["evidence"]["muted_by"] == [f"inhibited_by:{src['fingerprint']}"]
    # Metric alerts of the same version are inhibited too.
    for i in range(6):
        h.snapshot(snap(i * MIN, {"serving.error_rate": 0.5}), 2 * MIN + i * MIN)
    errors = [e for e in h.events if e["signal"] == "serving_error_rate"]
    assert statuses(errors) == [("serving_error_rate", "firing", (f"inhibited_by:{src['fingerprint']}",))]
    # Another version is not.
    (other,) = h.signal(sig("data_drift", True, 8 * MIN, version="v2", feature="amount"), 8 * MIN)
    assert "muted_by" not in other["evidence"]
    assert h.tick(9 * MIN) == []
    # The source resolves: the next tick announces the released alerts, unmuted.
    (res,) = h.signal(sig("silence", False, 10 * MIN, labels=silent), 10 * MIN)
    assert res["status"] == "resolved" and "muted_by" not in res["evidence"]
    released = h.tick(10 * MIN + 1)
    assert sorted(statuses(released)) == [("drift", "firing", ()), ("serving_error_rate", "firing", ())]
    assert h.tick(11 * MIN) == []
    for e in released:
        check_event(e)


def test_pending_source_does_not_inhibit() -> None:
    silence_2m = Rule("silence", "signal", kinds=("silence",), for_ms=2 * MIN)
    drift = Rule("drift", "signal", kinds=("data_drift",))
    h = Harness([silence_2m, drift])
    assert h.signal(sig("silence", True, 0, labels={"stream": "predictions"}), 0) == []
    (ev,) = h.signal(sig("data_drift", True, MIN, feature="a"), MIN)
    assert "muted_by" not in ev["evidence"]


def test_silenced_and_inhibited_lists_both() -> None:
    h = Harness(DEFAULT_RULES)
    h.lc.silences.add(Silence("s1", (Matcher("feature", "amount"),), 0, HOUR, "ops", "known"))
    (src,) = h.signal(sig("silence", True, 0, labels={"stream": "predictions"}), 0)
    (ev,) = h.signal(sig("data_drift", True, MIN, feature="amount"), MIN)
    assert ev["evidence"]["muted_by"] == ["silence:s1", f"inhibited_by:{fingerprint(src['labels'])}"]
