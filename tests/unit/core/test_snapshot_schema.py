"""Every metrics snapshot the engine emits is valid against ``schemas/metrics.v1.json``.

Snapshots are generated with the real :class:`~streams.core.engine.MetricsEngine`
over varied scripts (classification with segments, sampling and a
champion/challenger pair; regression revised by late labels and late events;
a model with no labels and every kind of feature; probability maps, class
folding and ``task: auto``; hopping windows at the epoch; segment overflow and
champion pairs in segments) and checked three ways:

* as the worker writes them (``orjson.dumps``, read back), against the
  published schema;
* as Python objects, against a *strict* copy of the schema, which refuses
  undeclared fields (the published one lets consumers ignore them, so it
  cannot notice a field the engine added without documenting it) and integral
  floats where the schema says ``integer``;
* as plain JSON data: only dicts with string keys, lists, str, int, float,
  bool and None, and no NaN or infinity (``orjson`` would silently write
  ``null`` for those).

Negative cases make sure the schema does reject broken snapshots.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator, validators

from streams.core.batches import FeedbackBatch, PredictionBatch
from streams.core.engine import MetricsEngine
from streams.core.metrics_config import EngineConfig, ModelConfig
from streams.core.outcomes import TaskConfig
from streams.core.snapshot import METRICS_V1
from streams.core.windows import WindowSpec
from tests.unit.core.builders import prediction_batch as batch
from tests.unit.core.test_engine import T0, _config, _run, _script

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = ROOT / "schemas" / "metrics.v1.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
PUBLIC = Draft202012Validator(SCHEMA)
IDLE_NOW = 10**12  # a wall-clock time far after every ``now_ms`` fed: every model is idle


# -- the strict validator ------------------------------------------------------------------------
def _is_int(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_StrictTypes = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int),
)


def _closed_objects(node: Any) -> Any:
    """A copy of ``node`` where every object schema with ``properties`` refuses other fields."""
    if isinstance(node, list):
        return [_closed_objects(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed_objects(v) for k, v in node.items()}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


STRICT = _StrictTypes(_closed_objects(SCHEMA))


def _plain_json(value: Any, path: str = "$") -> None:
    """Only JSON types (exactly, so no numpy scalar), string keys, finite floats."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            assert type(k) is str, f"{path}: key {k!r} is a {type(k).__name__}"
            _plain_json(v, f"{path}.{k}")
    elif t is list:
        for i, v in enumerate(value):
            _plain_json(v, f"{path}[{i}]")
    elif t is float:
        assert math.isfinite(value), f"{path}: {value!r} is not finite"
    else:
        assert value is None or t in (str, int, bool), f"{path}: {t.__name__} is not a JSON type"


def _errors(validator: Draft202012Validator, snap: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in validator.iter_errors(snap)]


def assert_valid(snap: dict[str, Any]) -> None:
    where = (
        snap.get("model"),
        snap.get("model_version"),
        snap.get("segment"),
        snap.get("window"),
        snap.get("window_start_ms"),
        snap.get("revision"),
    )
    _plain_json(snap)
    wire = orjson.loads(orjson.dumps(snap))  # exactly what MetricsStage.flush writes
    assert wire == snap, where
    assert not _errors(PUBLIC, wire), (where, _errors(PUBLIC, wire))
    assert not _errors(STRICT, snap), (where, _errors(STRICT, snap))


# -- building input --------------------------------------------------------------------------------


def feedback(ids: list[str], ys: list[Any], t_ms: int, model: str = "m") -> FeedbackBatch:
    return FeedbackBatch(model, ids, ys, np.full(len(ids), t_ms, dtype=np.int64))


Step = PredictionBatch | FeedbackBatch | int  # an int: advance the engine to that wall-clock time


def play(cfg: EngineConfig, steps: list[Step]) -> list[dict[str, Any]]:
    """Feed the steps (one record each), advancing after each, then close everything as idle."""
    eng = MetricsEngine(cfg, 0)
    out: list[dict[str, Any]] = []
    for off, step in enumerate(steps):
        if isinstance(step, PredictionBatch):
            eng.on_predictions(step, "predictions:0", off, now_ms=0)
        elif isinstance(step, FeedbackBatch):
            eng.on_feedback(step, "feedback:0", off, now_ms=0)
        else:
            eng.advance(now_ms=step)
            out.extend(eng.take_snapshots())
            continue
        eng.advance(now_ms=0)
        out.extend(eng.take_snapshots())
    eng.advance(now_ms=IDLE_NOW)
    out.extend(eng.take_snapshots())
    return out


def windows(*specs: str) -> tuple[WindowSpec, ...]:
    return tuple(WindowSpec.parse(s) for s in specs)


# -- scenarios --------------------------------------------------------------------------------------
def scenario_script() -> list[dict[str, Any]]:
    """test_engine's script: classification, segments, 50 % sampling, a champion/challenger pair."""
    eng = MetricsEngine(_config(), 0)
    steps = _script()
    out: list[dict[str, Any]] = []
    for off in range(len(steps)):
        _run(eng, steps, off, off + 1)
        out.extend(eng.take_snapshots())
    eng.advance(now_ms=IDLE_NOW)
    out.extend(eng.take_snapshots())
    return out


def scenario_regression_revised() -> list[dict[str, Any]]:
    """Regression, hopping windows, late labels and late events revising closed windows.

    Some events lack the segment tag (segment ``region=__missing__``); one label is a
    string, which a regression model cannot score.
    """
    cfg = EngineConfig(
        windows=windows("1m", "2m/1m"),
        allowed_lateness_ms=5_000,
        segment_by=("region",),
        models={"reg": ModelConfig(task=TaskConfig("regression"))},
    )
    n = 30
    ids = [f"r{i}" for i in range(n)]
    times = [T0 + 2_000 * i for i in range(n)]
    first = batch(
        ids,
        times,
        model="reg",
        prediction=[100.0 + i for i in range(n)],
        features={"surface_m2": [40.0 + i for i in range(n)], "rooms": [1 + i % 4 for i in range(n)]},
        segment={"region": ["eu" if i % 3 else None for i in range(n)]},
    )
    on_time = feedback(ids[:10], [95.0 + i for i in range(10)], T0 + 30_000, model="reg")
    later = batch(["r-next"], [T0 + 130_000], model="reg", prediction=[7.0])
    late_labels = feedback(
        [*ids[10:25], "r-next"], [*[float(i) for i in range(14)], "n/a", 8], T0 + 200_000, model="reg"
    )
    late_events = batch(["r-late1", "r-late2"], [T0 + 1_000, T0 + 2_000], model="reg", prediction=[1.0, 2.0])
    return play(cfg, [first, on_time, later, late_labels, late_events])


def scenario_no_labels_every_feature_kind() -> list[dict[str, Any]]:
    """No feedback, no prediction field, stratified sampling, every kind of feature, idle close."""
    cfg = EngineConfig(
        windows=windows("1m", "5m/1m"),
        top_k=2,  # 8 Misra-Gries counters: a 40-valued feature overflows them
        segment_by=("region",),
        models={
            "feat": ModelConfig(sample_rate=0.4, strategy="stratified", stratify_by="region"),
            "nulls": ModelConfig(sample_rate=0.5, strategy="stratified"),  # stratified by prediction
        },
    )
    n = 60
    ids = [f"f{i}" for i in range(n)]
    times = [T0 + 1_500 * i for i in range(n)]
    feats: dict[str, list[Any]] = {
        "amount": [None if i % 5 == 0 else 10.0 * i for i in range(n)],
        "country": [f"c{i % 40}" for i in range(n)],
        "vip": [i % 3 == 0 for i in range(n)],
        "referrer": [None] * n,
        "age": ["unknown" if i % 9 == 0 else 20 + i for i in range(n)],
        "code": [i if i % 10 == 0 else f"k{i % 4}" for i in range(n)],
    }
    region: dict[str, list[str | None]] = {"region": ["eu" if i % 4 else "apac" for i in range(n)]}
    steps: list[Step] = [
        batch(
            ids,
            times,
            model="feat",
            features=feats,
            segment=region,
            latency=[0.0 if i % 9 == 0 else float(i) for i in range(n)],
        ),
        batch(
            [f"z{i}" for i in range(8)],
            [T0 + 1_000 * i for i in range(8)],
            model="nulls",
            prediction=[None] * 8,
            features={"x": [1.5] * 8},
            latency=[0.0] * 8,
        ),
    ]
    return play(cfg, steps)


def scenario_classes_and_probabilities() -> list[dict[str, Any]]:
    """Probability maps, class folding, a positive label, ``task: auto``, labels of late events."""
    cfg = EngineConfig(
        windows=windows("1m"),
        allowed_lateness_ms=0,
        max_classes=2,
        models={
            "clf": ModelConfig(task=TaskConfig("classification", positive_label="yes")),
            "auto": ModelConfig(),
            "late": ModelConfig(task=TaskConfig("classification")),
        },
    )
    # Classes yes (positive, always kept), no, not:yes (the other side of {"yes": 0.4}), unsure, zzz:
    # with max_classes=2 the last two fold into __other__.
    maps = [
        {"yes": 0.7, "no": 0.2, "unsure": 0.1},
        {"yes": 0.1, "no": 0.3, "unsure": 0.6},
        {"yes": 0.4},
        {"yes": 0.9},
        {"zzz": 1.0, "yes": 0.0},
        {"no": 0.5, "yes": 0.5},
    ]
    truth = ["yes", "unsure", "no", "yes", "zzz", "no"]
    clf_ids = [f"c{i}" for i in range(len(maps))]
    auto_preds: list[Any] = [3.5, "yes", 2.0, "no", True, 0.2]
    auto_truth: list[Any] = [3.0, "yes", "two", "yes", "true", 1]
    auto_ids = [f"a{i}" for i in range(len(auto_preds))]
    steps: list[Step] = [
        batch(
            clf_ids,
            [T0 + 1_000 * i for i in range(len(maps))],
            model="clf",
            prediction=maps,
            features={"text_len": [12, 40, 3, 8, 100, 55]},
        ),
        feedback(clf_ids, truth, T0 + 20_000, model="clf"),
        batch(auto_ids, [T0 + 2_000 * i for i in range(len(auto_ids))], model="auto", prediction=auto_preds),
        feedback(auto_ids, auto_truth, T0 + 30_000, model="auto"),
        # One on-time event, one that closes its window, then two late ones, all labelled afterwards.
        batch(["l0", "l1"], [T0 + 1_000, T0 + 70_000], model="late", prediction=["x", "y"]),
        batch(["l2", "l3"], [T0 + 2_000, T0 + 3_000], model="late", prediction=["x", "x"]),
        feedback(["l0", "l2", "l3"], ["x", "x", "y"], T0 + 80_000, model="late"),
    ]
    return play(cfg, steps)


def scenario_hopping_at_the_epoch() -> list[dict[str, Any]]:
    """A hopping window holding the first minutes after 1970-01-01 starts before the epoch."""
    cfg = EngineConfig(windows=windows("1m", "3m/1m"), allowed_lateness_ms=0)
    return play(cfg, [batch(["e0", "e1", "e2"], [0, 1_000, 150_000], prediction=[0.1, 0.2, 0.3])])


def scenario_champions_in_segments() -> list[dict[str, Any]]:
    """Regression champion v1, challengers v2 (paired) and v3 (no champion traffic); segments overflow."""
    cfg = EngineConfig(
        windows=windows("1m"),
        allowed_lateness_ms=0,
        segment_by=("region",),
        max_segments=1,
        models={"cc": ModelConfig(task=TaskConfig("regression"), champion="v1", challengers=("v2", "v3"))},
    )
    n = 12
    times = [T0 + 4_000 * i for i in range(n)]
    rids: list[str | None] = [f"req{i}" for i in range(n)]
    region: dict[str, list[str | None]] = {"region": [("eu", "us", None)[i % 3] for i in range(n)]}
    steps: list[Step] = [
        batch(
            [f"a{i}" for i in range(n)],
            times,
            model="cc",
            version="v1",
            prediction=[float(i) for i in range(n)],
            segment=region,
            request_id=rids,
        ),
        batch(
            [f"b{i}" for i in range(n)],
            times,
            model="cc",
            version="v2",
            prediction=[float(i) + 0.5 for i in range(n)],
            segment=region,
            request_id=rids,
            errors=[False] * n,
        ),
        feedback(
            [f"a{i}" for i in range(n)] + [f"b{i}" for i in range(n)],
            [float(i) for i in range(n)] * 2,
            T0 + 50_000,
            model="cc",
        ),
        batch(["c0", "c1"], [T0 + 200_000, T0 + 201_000], model="cc", version="v3", prediction=[1.0, 2.0]),
        batch(["a-last"], [T0 + 400_000], model="cc", version="v1", prediction=[0.0]),
    ]
    return play(cfg, steps)


SCENARIOS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "script": scenario_script,
    "regression_revised": scenario_regression_revised,
    "no_labels_every_feature_kind": scenario_no_labels_every_feature_kind,
    "classes_and_probabilities": scenario_classes_and_probabilities,
    "hopping_at_the_epoch": scenario_hopping_at_the_epoch,
    "champions_in_segments": scenario_champions_in_segments,
}


@pytest.fixture(scope="module")
def snapshots() -> dict[str, list[dict[str, Any]]]:
    return {name: make() for name, make in SCENARIOS.items()}


# -- the schema itself --------------------------------------------------------------------------
def _nodes(node: Any, path: str = "#") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _nodes(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nodes(v, f"{path}/{i}")


def test_is_a_2020_12_schema_in_the_house_style() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == "https://driftline.dev/schemas/metrics.v1.json"
    assert SCHEMA["title"] and "ignore fields they do not know" in SCHEMA["description"]
    assert SCHEMA["properties"]["schema"]["const"] == METRICS_V1
    assert SCHEMA["required"] == list(SCHEMA["properties"])  # every top-level field is always written
    assert "additionalProperties" not in SCHEMA
    for path, node in _nodes({k: v for k, v in SCHEMA.items() if k != "examples"}):
        if isinstance(node, dict) and "properties" in node and "required" in node:  # an object's fields
            for name, prop in node["properties"].items():
                assert prop.get("description"), f"{path}/properties/{name} has no description"


def test_examples_and_readme_blocks_are_valid() -> None:
    assert len(SCHEMA["examples"]) >= 2
    readme = (ROOT / "schemas" / "README.md").read_text()
    blocks = re.findall(r"^```(json|jsonc)[ \t]*\n(.*?)^```", readme, flags=re.M | re.S)
    ours = [json.loads(body) for lang, body in blocks if lang == "json" and f'"{METRICS_V1}"' in body]
    assert ours, "schemas/README.md has no metrics snapshot example"
    for example in [*SCHEMA["examples"], *ours]:
        assert not _errors(PUBLIC, example), _errors(PUBLIC, example)
        assert not _errors(STRICT, example), _errors(STRICT, example)


# -- engine output -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_snapshot_is_valid(name: str, snapshots: dict[str, list[dict[str, Any]]]) -> None:
    snaps = snapshots[name]
    assert snaps
    for snap in snaps:
        assert_valid(snap)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_snapshots_keep_the_documented_semantics(
    name: str, snapshots: dict[str, list[dict[str, Any]]]
) -> None:
    """What the schema's descriptions promise beyond types."""
    last: dict[tuple[Any, ...], int] = {}
    for s in snapshots[name]:
        key = (s["model"], s["model_version"], s["segment"], s["window"], s["window_start_ms"])
        assert s["revision"] == last.get(key, -1) + 1, key  # 0 first, then + 1 per revision, in order
        last[key] = s["revision"]
        assert (s["reason"] == "revised") == (s["revision"] > 0), key
        size_ms = WindowSpec.parse(s["window"].partition("/")[0]).size_ms
        assert s["window_end_ms"] - s["window_start_ms"] == size_ms, key
        serving = s["serving"]
        assert serving["errors"] <= serving["count"], key
        if serving["count"]:
            assert s["window_start_ms"] <= serving["first_event_ms"] <= serving["last_event_ms"], key
            assert serving["last_event_ms"] < s["window_end_ms"], key
            assert serving["error_rate"] == serving["errors"] / serving["count"], key
            assert s["labels"]["coverage"] == s["labels"]["labelled"] / (
                serving["count"] + s["late_events"]
            ), key
            assert s["labels"]["coverage"] <= 1, key
        assert (s["labels"]["labelled"] == 0) == (s["labels"]["delay_ms"]["max"] is None), key
        if s["sampling"]["rate"] == 1:
            assert s["sampling"]["estimated_events"] == s["sampling"]["sampled_events"] == serving["count"]


def test_the_scenarios_cover_the_interesting_shapes(snapshots: dict[str, list[dict[str, Any]]]) -> None:
    """Guard against scenarios that quietly stop producing what they are here for."""
    every = [s for snaps in snapshots.values() for s in snaps]
    feats = [f for s in every for f in [*s["features"].values(), s["predictions"]] if f is not None]
    labels = [s["labels"] for s in every]
    clf = [lab["classification"] for lab in labels if lab["classification"] is not None]
    reg = [lab["regression"] for lab in labels if lab["regression"] is not None]
    champ = [s["champion"] for s in every if s["champion"] is not None]
    assert {s["reason"] for s in every} == {"closed", "idle", "revised"}
    assert any(s["revision"] >= 2 for s in every)
    assert any(s["late_events"] > 0 for s in every)
    assert {s["segment"] for s in every} >= {None, "region=eu", "region=__missing__", "region=__other__"}
    assert any(s["window_start_ms"] < 0 for s in every)
    idle = [s for s in every if s["reason"] == "idle"]
    assert any(s["window_end_ms"] > s["serving"]["last_event_ms"] + 60_000 for s in idle)  # closed early
    assert {s["sampling"]["strategy"] for s in every} == {"random", "stratified"}
    assert any(s["predictions"] is None for s in every)
    assert {f["kind"] for f in feats} == {"numeric", "categorical"}
    assert any(f.get("mixed") and f["kind"] == "numeric" for f in feats)
    assert any(f.get("mixed") and f["kind"] == "categorical" for f in feats)
    assert any(f["kind"] == "categorical" and f["max_count_error"] > 0 for f in feats)
    assert any(f["kind"] == "categorical" and f["count"] == 0 for f in feats)
    assert any(s["serving"]["latency_ms"]["p50"] == 0.0 for s in every)
    assert any(lab["labelled"] == 0 and lab["delay_ms"]["p50"] is None for lab in labels)
    assert all(lab["coverage"] is None or lab["coverage"] <= 1 for lab in labels)
    assert any(lab["classification"] is not None and lab["regression"] is not None for lab in labels)
    assert any(lab["classification"] is None and lab["regression"] is None for lab in labels)
    assert any("__other__" in c["confusion"] for c in clf)
    assert any(k.startswith("not:") for c in clf for k in c["per_class"])
    assert any(c["binary"] is None for c in clf) and any(c["binary"] is not None for c in clf)
    assert any(c["log_loss"] is not None for c in clf) and any(c["log_loss"] is None for c in clf)
    assert any(r["skipped"] == 0 and r["n"] > 0 for r in reg)
    assert any(c["paired"] is not None for c in champ) and any(c["paired"] is None for c in champ)
    assert any(c["rmse_diff"] is not None for c in champ)
    assert any(c["accuracy_diff"] is None and c["error_rate_diff"] is None for c in champ)


# -- the schema rejects broken snapshots -------------------------------------------------------
def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(snap: dict[str, Any]) -> None:
        node = snap
        for p in parents:
            node = node[p]
        del node[last]

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(snap: dict[str, Any]) -> None:
        node = snap
        for p in parents:
            node = node[p]
        node[last] = value

    return edit


BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    "no revision": _delete("revision"),
    "no labels": _delete("labels"),
    "no serving count": _delete("serving.count"),
    "no feature mean": _delete("features.x.mean"),
    "no champion_version": _delete("champion.champion_version"),
    "revision as a string": _set("revision", "1"),
    "revision negative": _set("revision", -1),
    "count fractional": _set("serving.count", 80.5),
    "count null": _set("serving.count", None),
    "unknown reason": _set("reason", "opened"),
    "other schema tag": _set("schema", "driftline.metrics/v2"),
    "segment not a key=value": _set("segment", "eu"),
    "bad window name": _set("window", "1 minute"),
    "model with a newline": _set("model", "m\n"),
    "error_rate above 1": _set("serving.error_rate", 1.5),
    "coverage as a string": _set("labels.coverage", "36%"),
    "half-empty latency summary": _set("serving.latency_ms.p50", None),
    "no relative accuracy": _delete("serving.latency_ms.relative_accuracy"),
    "unknown feature kind": _set("features.x.kind", "text"),
    "empty feature name": lambda s: s["features"].update({"": s["features"]["x"]}),
    "top entry of three": _set(
        "features.x",
        {
            "kind": "categorical",
            "count": 2.0,
            "missing": 0.0,
            "missing_rate": 0.0,
            "top": [["a", 2.0, 1]],
            "distinct_tracked": 1,
            "max_count_error": 0.0,
        },
    ),
    "confusion cell zero": _set("labels.classification.confusion.0.0", 0.0),
    "sampling rate 0": _set("sampling.rate", 0.0),
    "unknown strategy": _set("sampling.strategy", "systematic"),
    "paired not an object": _set("champion.paired", 0.1),
}


def _challenger(snapshots: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A closed challenger snapshot of the script with classification labels (for every edit to apply)."""
    snap = next(s for s in snapshots["script"] if s["champion"] is not None and s["segment"] is None)
    snap = copy.deepcopy(snap)
    v1 = next(s for s in snapshots["script"] if s["labels"]["classification"] is not None)
    snap["labels"] = copy.deepcopy(v1["labels"])
    assert_valid(snap)
    return snap


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_snapshot_is_rejected(case: str, snapshots: dict[str, list[dict[str, Any]]]) -> None:
    snap = _challenger(snapshots)
    BROKEN[case](snap)
    assert not PUBLIC.is_valid(snap), case
    assert not STRICT.is_valid(snap), case


def test_unknown_fields_are_ignored_by_the_contract_but_not_by_the_strict_check(
    snapshots: dict[str, list[dict[str, Any]]],
) -> None:
    snap = _challenger(snapshots)
    snap["serving"]["p999_ms"] = 1.0  # a reader must ignore it; the engine must not emit it undocumented
    assert PUBLIC.is_valid(snap)
    assert not STRICT.is_valid(snap)
    snap = _challenger(snapshots)
    snap["serving"]["count"] = 80.0  # JSON Schema's "integer" takes 80.0; the worker writes 80
    assert PUBLIC.is_valid(snap)
    assert not STRICT.is_valid(snap)
