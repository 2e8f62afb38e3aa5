"""Differential test: the published JSON Schemas and the msgspec decoder agree.

The reference verdict on a generated JSON text is jsonschema's
``Draft202012Validator`` on ``schemas/record.v1.json`` (the text is read with
``json.loads``, so ``1e400`` becomes infinity there). Driftline's verdict is
"``Decoder().decode(text)`` yields zero rejects and exactly one valid event".
Seeded generators (``random.Random``, fixed seeds) build thousands of valid
events of each single kind, and thousands of mutated ones: wrong types, missing
required fields, unknown fields, numbers out of range (negative latency,
overflow written as the raw text ``1e400``, decimals one ulp past a bound,
integers past 2**63 and 2**64), strings one character too long (counted in
code points, astral characters included), bad name patterns, bad enum values
and schema tags, nested objects in features, probabilities outside [0, 1],
empty strings, booleans where numbers are expected, non-ASCII text, too many
entries... The two verdicts must agree on every case.

Column batches: N generated single events of one model (version), valid and
invalid mixed, are transposed into a column batch; the decoder must accept
exactly the events the reference accepts one by one, and reject the others
with their own ``batch_index``.

Known, intentional differences, excluded from generation (each is shown to be
real by ``test_documented_exclusions_are_real``):

* Integral floats for integer fields. JSON Schema's "integer" accepts ``1.0``
  (and ``1e3``); msgspec rejects any float for an ``int`` field. No integral
  float is generated for integer fields (non-integral ones, and ``1e400``, are).
* Duplicate event ids within one record: Driftline dead-letters the repeats
  (``duplicate_event_id``); JSON Schema cannot express uniqueness of a field.
* Integer literals just above the largest double, in (1.7976931348623157e308,
  2**1024 - 2**970): msgspec rounds them to the largest double and accepts them,
  while JSON Schema compares the exact integer and rejects it. Decimal literals
  are not affected: ``json.loads`` rounds them exactly as msgspec does.
* Lone UTF-16 surrogates (``"\\ud800"``): not Unicode text; ``json.loads``
  accepts them, msgspec refuses the record as malformed JSON.
* Regex dialects: both sides here use Python's ``re``. The name patterns end in
  ``$(?!\\n)`` so that they also mean the same under ECMA-262, the dialect JSON
  Schema specifies (``test_schemas.py`` checks ``"fraud\\n"`` is refused).
* Column batches: unknown fields, bad feature/segment keys and too many keys
  belong to the whole batch once transposed, so only per-event values are
  mutated there; a null segment entry means "tag absent" in columns, so no
  single event is given a null segment value there. Numbers beyond the double
  range and null optional columns are covered by the dedicated regression tests
  at the end of this module.
"""

from __future__ import annotations

import json
import math
import random
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from streams.events import models as m
from streams.events.codec import Decoder
from streams.events.reasons import Reason

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
MAX = m.MAX_F64
INT64_MAX = 2**63 - 1
EPOCH_MAX = 253_402_300_799_999
ALNUM = string.ascii_letters + string.digits
NAME_REST = ALNUM + "._:-"
# Non-ASCII and awkward characters: accents, CJK, astral (two UTF-16 units),
# combining marks, RTL, zero-width, NUL, controls, JSON escapes.
ODD = ["é", "ß", "中", "文", "😀", "🧪", "\U0010ffff", "\u0301", "א", "\u200b", "\x00", "\n",
       "\t", "\u2028", '"', "\\", "/", "\x7f"]

# Raw JSON number texts, spliced into the serialized text in place of a marker
# string. Only used for float-typed fields (they are floats after json.loads).
RAW = {
    "@@POS_OVERFLOW@@": "1e400",
    "@@NEG_OVERFLOW@@": "-1e400",
    "@@BIG_EXP@@": "1E+400",
    "@@UNDERFLOW@@": "1e-400",
    "@@NEG_UNDERFLOW@@": "-1e-400",
    "@@ONE_ROUNDS_DOWN@@": "1.0000000000000001",
    "@@ONE_PAST_TIE@@": "1.00000000000000011102230246251565404236316680908203126",
    "@@HUNDRED_ULP@@": "100.00000000000001",
    "@@MAX_DECIMAL@@": "1.7976931348623158e308",
    "@@PAST_MAX_DECIMAL@@": "1.7976931348623159e308",
    "@@NEG_ZERO@@": "-0.0",
    "@@ZERO_EXP@@": "0E0",
}
OVERFLOW = ("@@POS_OVERFLOW@@", "@@NEG_OVERFLOW@@", "@@BIG_EXP@@")


# -- reference ----------------------------------------------------------------
def load_registry() -> tuple[Registry, dict[str, Any]]:
    docs = {p.name: json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))}
    registry: Registry = Registry().with_resources(
        (d["$id"], Resource.from_contents(d)) for d in docs.values()
    )
    return registry, docs


_REGISTRY, _DOCS = load_registry()
RECORD = Draft202012Validator(_DOCS["record.v1.json"], registry=_REGISTRY)
# ``oneOf`` is the record schema's only assertion, so its verdict is "valid
# against exactly one branch". jsonschema's own ``oneOf`` lists every error of
# every failing branch before deciding (~5x slower); ``is_valid`` stops at the
# first error. Each branch is its ``$ref`` target resolved once through the
# registry. ``test_reference_shortcut_is_exact`` checks both ways agree.
def _branch(sub: dict[str, Any]) -> Draft202012Validator:
    ref = sub.get("$ref", "")
    if set(sub) == {"$ref"} and not ref.startswith("#"):
        resolved = _REGISTRY.resolver(base_uri=_DOCS["record.v1.json"]["$id"]).lookup(ref)
        return Draft202012Validator(resolved.contents, registry=_REGISTRY)
    return RECORD.evolve(schema=sub)


BRANCHES = [_branch(b) for b in _DOCS["record.v1.json"]["oneOf"]]


def reference_verdict(text: str) -> bool:
    return reference_valid(json.loads(text))


def reference_valid(obj: Any) -> bool:
    return sum(b.is_valid(obj) for b in BRANCHES) == 1


def reference_reason(text: str) -> str:
    """Why the reference rejects ``text`` (only computed for a failure message)."""
    obj = json.loads(text)
    if reference_valid(obj):
        return "valid"
    event = obj[0] if isinstance(obj, list) and len(obj) == 1 else obj
    tag = event.get("schema") if isinstance(event, dict) else None
    for branch in BRANCHES:
        if branch.schema.get("properties", {}).get("schema", {}).get("const") == tag:
            err = best_match(branch.iter_errors(event))
            if err is not None:
                return f"{err.message[:300]} at {list(err.absolute_path)}"
    err = best_match(RECORD.iter_errors(obj))
    return "no error?" if err is None else f"{err.message[:300]} at {list(err.absolute_path)}"


def driftline_verdict(decoder: Decoder, text: str) -> bool:
    out = decoder.decode(text.encode("utf-8"))
    return not out.rejected and out.n_valid == 1


def driftline_reason(text: str) -> str:
    out = Decoder().decode(text.encode("utf-8"))
    return (f"n_valid={out.n_valid}, rejected="
            f"{[(r.reason.value, r.batch_index, r.detail[:200]) for r in out.rejected]}")


# -- value generators ---------------------------------------------------------
def text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    if rng.random() < 0.25:
        return "".join(rng.choice(ODD) if rng.random() < 0.3 else rng.choice(ALNUM)
                       for _ in range(n))
    return "".join(rng.choice(ALNUM) for _ in range(n))


def sized(rng: random.Random, n: int) -> str:
    """Exactly ``n`` code points, sometimes astral (2 UTF-16 units, 4 UTF-8 bytes) ones."""
    if n and rng.random() < 0.3:
        return "".join(rng.choice(["😀", "é", "中", "a"]) for _ in range(n))
    return "".join(rng.choice(ALNUM) for _ in range(n))


def upto(rng: random.Random, hi: int) -> str:
    """A valid string of at most ``hi`` code points, often at the bound."""
    return sized(rng, hi) if rng.random() < 0.1 else text(rng, 0, min(hi, 24))


def nonempty(rng: random.Random, hi: int) -> str:
    r = rng.random()
    if r < 0.1:
        return sized(rng, hi)
    if r < 0.15:
        return sized(rng, 1)
    return text(rng, 1, min(hi, 24))


def name(rng: random.Random) -> str:
    r = rng.random()
    n = 127 if r < 0.08 else 0 if r < 0.16 else rng.randint(1, 20)
    return rng.choice(ALNUM) + "".join(rng.choice(NAME_REST) for _ in range(n))


def finite(rng: random.Random) -> Any:
    return rng.choice([
        lambda: rng.uniform(-1e6, 1e6),
        lambda: rng.randint(-10**9, 10**9),
        lambda: MAX, lambda: -MAX, lambda: 0, lambda: -0.0, lambda: 5e-324,
        lambda: rng.choice([1e308, -1e308, 10**308, -(10**308), 2**63, 2**64 + 1]),
        lambda: round(rng.gauss(0, 100), 3),
        lambda: "@@MAX_DECIMAL@@", lambda: "@@UNDERFLOW@@", lambda: "@@NEG_ZERO@@",
    ])()


def in_range(rng: random.Random, lo: float, hi: float) -> Any:
    r = rng.random()
    if r < 0.1:
        return lo
    if r < 0.2:
        return hi
    if r < 0.35 and math.ceil(lo) <= math.floor(hi):
        return rng.randint(math.ceil(lo), min(math.floor(hi), 10**6))
    return rng.uniform(lo, min(hi, 1e6))


def nonneg(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.05:
        return MAX
    if r < 0.1:
        return rng.choice(["@@UNDERFLOW@@", "@@NEG_UNDERFLOW@@", "@@NEG_ZERO@@", "@@ZERO_EXP@@"])
    return in_range(rng, 0.0, 1e5)


def count(rng: random.Random) -> int:
    return rng.choice([0, INT64_MAX, rng.randint(0, 10**12), rng.randint(0, 100)])


def epoch_ms(rng: random.Random) -> int:
    return rng.choice([0, EPOCH_MAX, rng.randint(1_600_000_000_000, 1_900_000_000_000)])


def probability(rng: random.Random) -> Any:
    return rng.choice([0, 1, 0.0, 1.0, rng.random(), "@@ONE_ROUNDS_DOWN@@"])


def key(rng: random.Random) -> str:
    return nonempty(rng, 128)


def feature_value(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.4:
        return finite(rng)
    if r < 0.7:
        return upto(rng, 1024)
    if r < 0.85:
        return rng.random() < 0.5
    return None


def features(rng: random.Random) -> dict[str, Any]:
    return {key(rng): feature_value(rng) for _ in range(rng.randint(0, 8))}


def probabilities(rng: random.Random) -> dict[str, Any]:
    return {key(rng): probability(rng) for _ in range(rng.randint(1, 5))}


def prediction_value(rng: random.Random) -> Any:
    return rng.choice([finite, lambda r: upto(r, 1024), probabilities, lambda r: None])(rng)


def segment(rng: random.Random, keys: list[str] | None = None) -> dict[str, str]:
    keys = keys if keys is not None else [key(rng) for _ in range(rng.randint(0, 4))]
    return {k: upto(rng, 1024) for k in keys}


def maybe(rng: random.Random, d: dict[str, Any], field: str, make: Callable[[], Any],
          p: float = 0.5, p_null: float = 0.1) -> None:
    r = rng.random()
    if r < p:
        d[field] = make()
    elif r < p + p_null:
        d[field] = None


def valid_prediction(rng: random.Random) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "schema": m.PREDICTION_V1,
        "event_id": nonempty(rng, 128),
        "model": name(rng),
        "model_version": nonempty(rng, 64),
        "event_time_ms": epoch_ms(rng),
        "latency_ms": nonneg(rng),
        "status": rng.choice(["ok", "error"]),
    }
    if rng.random() < 0.8:
        ev["features"] = features(rng)
    maybe(rng, ev, "prediction", lambda: prediction_value(rng), 0.7)
    maybe(rng, ev, "segment", lambda: segment(rng), 0.3)
    maybe(rng, ev, "request_id", lambda: upto(rng, 256), 0.3)
    return ev


def valid_feedback(rng: random.Random) -> dict[str, Any]:
    return {
        "schema": m.FEEDBACK_V1,
        "event_id": nonempty(rng, 128),
        "model": name(rng),
        "label": rng.choice([finite, lambda r: upto(r, 1024)])(rng),
        "event_time_ms": epoch_ms(rng),
    }


def gpu(rng: random.Random) -> dict[str, Any]:
    g: dict[str, Any] = {"index": rng.choice([0, 1023, rng.randint(0, 7)])}
    maybe(rng, g, "utilization_percent", lambda: in_range(rng, 0, 100), 0.7)
    maybe(rng, g, "memory_used_bytes", lambda: count(rng), 0.7)
    maybe(rng, g, "memory_total_bytes", lambda: count(rng), 0.7)
    maybe(rng, g, "temperature_c", lambda: in_range(rng, -273.15, 1000), 0.7)
    maybe(rng, g, "power_w", lambda: nonneg(rng), 0.7)
    return g


def valid_telemetry(rng: random.Random) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "schema": m.TELEMETRY_V1,
        "host": name(rng),
        "model": name(rng),
        "event_time_ms": epoch_ms(rng),
        "cpu_percent": in_range(rng, 0, 100_000),
        "rss_bytes": count(rng),
        "memory_percent": in_range(rng, 0, 100),
    }
    maybe(rng, ev, "model_version", lambda: nonempty(rng, 64), 0.5)
    maybe(rng, ev, "pod", lambda: name(rng), 0.4)
    maybe(rng, ev, "inflight_requests", lambda: count(rng), 0.4)
    maybe(rng, ev, "gpus", lambda: [gpu(rng) for _ in range(rng.choice([0, 1, 2, 3]))], 0.4)
    return ev


VALID: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "prediction": valid_prediction,
    "feedback": valid_feedback,
    "telemetry": valid_telemetry,
}

# Field types, for targeted mutations. A trailing "?" marks a nullable field.
FIELDS = {
    "prediction": {"event_id": "eventId", "model": "name", "model_version": "version",
                   "event_time_ms": "epochMs", "latency_ms": "nonneg", "status": "status",
                   "features": "features", "prediction": "prediction?", "segment": "segment?",
                   "request_id": "requestId?"},
    "feedback": {"event_id": "eventId", "model": "name", "label": "label",
                 "event_time_ms": "epochMs"},
    "telemetry": {"host": "name", "model": "name", "event_time_ms": "epochMs",
                  "cpu_percent": "cpu", "rss_bytes": "count", "memory_percent": "percent",
                  "model_version": "version?", "pod": "name?", "inflight_requests": "count?",
                  "gpus": "gpus?"},
}
REQUIRED = {
    "prediction": ["schema", "event_id", "model", "model_version", "event_time_ms",
                   "latency_ms", "status"],
    "feedback": ["schema", "event_id", "model", "label", "event_time_ms"],
    "telemetry": ["schema", "host", "model", "event_time_ms", "cpu_percent", "rss_bytes",
                  "memory_percent"],
}
GPU_FIELDS = {"index": "gpuIndex", "utilization_percent": "percent?",
              "memory_used_bytes": "count?", "memory_total_bytes": "count?",
              "temperature_c": "temp?", "power_w": "nonneg?"}
FLOAT_BOUNDS = {"nonneg": (0.0, MAX), "percent": (0.0, 100.0), "cpu": (0.0, 100_000.0),
                "temp": (-273.15, 1000.0), "prob": (0.0, 1.0), "finite": (-MAX, MAX)}
INT_BOUNDS = {"epochMs": (0, EPOCH_MAX), "count": (0, INT64_MAX), "gpuIndex": (0, 1023)}
STR_BOUNDS = {"eventId": (1, 128), "version": (1, 64), "requestId": (0, 256),
              "short": (0, 1024), "key": (1, 128)}


def junk(rng: random.Random) -> Any:
    """Any JSON value, of any type."""
    return rng.choice([
        None, True, False, 0, -1, 1.5, "", "x", "12", [], [1], {}, {"a": 1}, [None],
        rng.randint(-10**20, 10**20), "@@POS_OVERFLOW@@", {"nested": {"deeper": [1, 2]}},
    ])


def bad_float(rng: random.Random, typ: str) -> Any:
    lo, hi = FLOAT_BOUNDS[typ]
    return rng.choice([
        lambda: math.nextafter(lo, -math.inf) if lo > -MAX else "@@NEG_OVERFLOW@@",
        lambda: math.nextafter(hi, math.inf) if hi < MAX else "@@POS_OVERFLOW@@",
        lambda: lo - rng.choice([1, 0.5, 1e-9, 10**30]) if lo > -MAX else -(2**1024),
        lambda: hi + rng.choice([1, 0.5, 1e-9, 10**30]) if hi < MAX else 2**1024,
        lambda: rng.choice(OVERFLOW),
        lambda: rng.choice([True, False]),
        lambda: rng.choice(["1", "0.5", "NaN", "Infinity", ""]),
        lambda: rng.choice([[1.0], {"v": 1.0}]),
        lambda: -1 if lo == 0 else -(10**400),
        lambda: {"prob": "@@ONE_PAST_TIE@@", "percent": "@@HUNDRED_ULP@@",
                 "nonneg": -5e-324, "cpu": 100_001}.get(typ, "@@PAST_MAX_DECIMAL@@"),
    ])()


def bad_int(rng: random.Random, typ: str) -> Any:
    lo, hi = INT_BOUNDS[typ]
    return rng.choice([
        lambda: lo - 1, lambda: hi + 1, lambda: rng.choice([2**63, 2**64, 10**30, 10**400]),
        lambda: rng.choice([-(2**63) - 1, -(2**64), -(10**30)]),
        lambda: rng.randint(0, 1000) + 0.5, lambda: -0.25,  # never an integral float
        lambda: rng.choice(OVERFLOW),  # infinity is not integral either
        lambda: rng.choice([True, False]),
        lambda: rng.choice([str(hi), "1", ""]),
        lambda: rng.choice([[1], {"ms": 1}]),
    ])()


def bad_str(rng: random.Random, typ: str) -> Any:
    lo, hi = STR_BOUNDS[typ]
    choices = [
        lambda: sized(rng, hi + 1),
        lambda: sized(rng, hi + rng.randint(2, 50)),
        lambda: rng.choice([0, 1.5, True, [], {}, ["a"]]),
    ]
    if lo > 0:
        choices.append(lambda: "")
    return rng.choice(choices)()


def bad_name(rng: random.Random) -> Any:
    good = name(rng)
    return rng.choice([
        "", good + "\n", "\n" + good, good + " ", " " + good, "-" + good, "." + good,
        "_" + good, good[:1] + "/" + good[1:], good[:1] + "é" + good[1:], "modèle", "модель",
        good[:1] + "\u0661" + good[1:],  # an Arabic-Indic digit
        rng.choice(ALNUM) + "a" * 128,  # 129 characters
        good + rng.choice(["$", "#", "@", "!", "\x00", "\t", "\u2028"]),
        rng.choice([1, True, None, ["a"], {"a": "b"}]),
    ])


def bad_value(rng: random.Random, typ: str) -> Any:
    """A value that is probably invalid for ``typ`` (the reference decides)."""
    typ = typ.rstrip("?")
    if rng.random() < 0.1:
        return junk(rng)
    if typ in FLOAT_BOUNDS:
        return bad_float(rng, typ)
    if typ in INT_BOUNDS:
        return bad_int(rng, typ)
    if typ in STR_BOUNDS:
        return bad_str(rng, typ)
    if typ == "name":
        return bad_name(rng)
    if typ == "status":
        return rng.choice(["OK", "Ok", "err", "errored", "failure", "", " ok", "ok\n", None, 1,
                           True, ["ok"]])
    if typ == "label":
        return rng.choice([lambda: bad_float(rng, "finite"), lambda: bad_str(rng, "short"),
                           lambda: rng.choice([True, None, {"y": 1}, ["a", "b"]])])()
    if typ == "features":
        return bad_features(rng)
    if typ == "prediction":
        return bad_prediction(rng)
    if typ == "segment":
        return bad_segment(rng)
    if typ == "gpus":
        return bad_gpus(rng)
    raise AssertionError(typ)


def bad_features(rng: random.Random) -> Any:
    f = features(rng)
    k = key(rng)
    return rng.choice([
        lambda: {**f, k: {"nested": rng.choice([1, "a", None])}},
        lambda: {**f, k: [1, 2, 3]},
        lambda: {**f, k: []},
        lambda: {**f, k: bad_float(rng, "finite")},
        lambda: {**f, k: sized(rng, 1025)},
        lambda: {**f, "": 1.0},
        lambda: {**f, sized(rng, 129): "x"},
        lambda: {**f, sized(rng, 128): "edge"},  # valid: key at its bound
        lambda: rng.choice([None, [], "features", 1, [["a", 1]]]),
        # 1000 entries is the bound; such big events are slow to validate, so rare.
        *([lambda: {f"f{i}": i for i in range(rng.choice([1000, 1001]))}]
          if rng.random() < 0.2 else []),
    ])()


def bad_prediction(rng: random.Random) -> Any:
    p = probabilities(rng)
    k = key(rng)
    return rng.choice([
        lambda: {**p, k: bad_float(rng, "prob")},
        lambda: {**p, k: rng.choice([1.5, 2, -0.1, 100])},
        lambda: {},
        lambda: {**p, k: None},
        lambda: {**p, k: "0.5"},
        lambda: {**p, k: {"p": 0.5}},
        lambda: {**p, "": 0.5},
        *([lambda: {f"c{i}": 0.001 for i in range(rng.choice([1000, 1001]))}]
          if rng.random() < 0.2 else []),
        lambda: bad_float(rng, "finite"),
        lambda: sized(rng, 1025),
        lambda: rng.choice([True, False, [0.1, 0.9], [[0.5]]]),
    ])()


def bad_segment(rng: random.Random) -> Any:
    s = segment(rng)
    k = key(rng)
    return rng.choice([
        lambda: {**s, k: rng.choice([1, 1.5, True, None, [], {"a": "b"}])},
        lambda: {**s, k: sized(rng, 1025)},
        lambda: {**s, "": "x"},
        lambda: {**s, sized(rng, 129): "x"},
        lambda: {f"s{i}": "v" for i in range(rng.choice([32, 33]))},
        lambda: rng.choice([[], "tenant=acme", 1, [["tenant", "acme"]]]),
    ])()


def bad_gpu(rng: random.Random) -> Any:
    g = gpu(rng)
    f = rng.choice(list(GPU_FIELDS))
    return rng.choice([
        lambda: {**g, f: bad_value(rng, GPU_FIELDS[f])},
        lambda: {k: v for k, v in g.items() if k != "index"},
        lambda: {**g, rng.choice(["name", "uuid", "Index", "fan_percent"]): 1},
        lambda: rng.choice([None, 0, "gpu0", [0]]),
    ])()


def bad_gpus(rng: random.Random) -> Any:
    gs = [gpu(rng) for _ in range(rng.randint(0, 3))]
    return rng.choice([
        lambda: [*gs, bad_gpu(rng)],
        lambda: rng.choice([{}, {"index": 0}, 0, "gpu0"]),
        *([lambda: [{"index": i} for i in range(rng.choice([64, 65]))]]
          if rng.random() < 0.25 else []),
    ])()


# -- mutations ----------------------------------------------------------------
Mutation = Callable[[random.Random, dict[str, Any], str], Any]


def m_wrong_value(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    f = rng.choice(list(FIELDS[kind]))
    return {**ev, f: bad_value(rng, FIELDS[kind][f])}


def m_wrong_type(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    f = rng.choice([*FIELDS[kind], "schema"])
    return {**ev, f: junk(rng)}


def m_missing(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    f = rng.choice(REQUIRED[kind])
    return {k: v for k, v in ev.items() if k != f}


def m_null_required(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    return {**ev, rng.choice(REQUIRED[kind]): None}


def m_unknown_field(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    f = rng.choice(["extra", "Model", "eventId", "latencyMs", "event_ids", "timestamp", "",
                    "schema ", "labels", "features_", text(rng, 1, 10), "tags", "version"])
    return {**ev, f: rng.choice([1, "x", None, {}, []])}


def m_overflow(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    floats = [f for f, t in FIELDS[kind].items() if t.rstrip("?") in FLOAT_BOUNDS]
    targets = [*floats, "features", "prediction", "label"]
    f = rng.choice([t for t in targets if t in FIELDS[kind]])
    raw = rng.choice(OVERFLOW)
    if f == "features":
        feats = ev.get("features")
        return {**ev, "features": {**(feats if isinstance(feats, dict) else {}), key(rng): raw}}
    if f == "prediction" and rng.random() < 0.5:
        return {**ev, "prediction": {key(rng): raw}}
    return {**ev, f: raw}


def m_bad_tag(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    tag = {"prediction": m.PREDICTION_V1, "feedback": m.FEEDBACK_V1,
           "telemetry": m.TELEMETRY_V1}[kind]
    return {**ev, "schema": rng.choice([
        tag.replace("/v1", "/v2"), tag.replace("/v1", "/v0"), tag.upper(), tag + " ",
        tag.replace("driftline.", ""), tag.replace("/v1", ""), "",
        m.PREDICTION_COLUMNS_V1, m.FEEDBACK_COLUMNS_V1, m.ALERT_V1, m.DEAD_LETTER_V1,
        rng.choice([m.PREDICTION_V1, m.FEEDBACK_V1, m.TELEMETRY_V1]),  # another kind
    ])}


def m_bad_name(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    names = [f for f, t in FIELDS[kind].items() if t.rstrip("?") == "name"]
    return {**ev, rng.choice(names): bad_name(rng)}


def m_bool_for_number(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    nums = [f for f, t in FIELDS[kind].items()
            if t.rstrip("?") in FLOAT_BOUNDS or t.rstrip("?") in INT_BOUNDS or t == "label"]
    return {**ev, rng.choice(nums): rng.choice([True, False])}


def m_empty_string(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    strs = [f for f, t in FIELDS[kind].items()
            if t.rstrip("?") in STR_BOUNDS or t.rstrip("?") in ("name", "status", "label")]
    return {**ev, rng.choice([*strs, "schema"]): ""}


def m_too_long(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    strs = {f: t.rstrip("?") for f, t in FIELDS[kind].items() if t.rstrip("?") in STR_BOUNDS}
    if kind != "telemetry":
        strs[rng.choice(["label", "prediction"]) if kind == "prediction" else "label"] = "short"
    strs = {f: t for f, t in strs.items() if f in FIELDS[kind]}
    f = rng.choice(list(strs))
    hi = STR_BOUNDS[strs[f]][1]
    return {**ev, f: sized(rng, hi + rng.choice([0, 1, 1, 2]))}


def m_non_ascii(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    f = rng.choice([f for f, t in FIELDS[kind].items()
                    if t.rstrip("?") in STR_BOUNDS or t.rstrip("?") == "name"])
    return {**ev, f: "".join(rng.choice(ODD) for _ in range(rng.randint(1, 6)))}


def m_huge_int(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    nums = [f for f, t in FIELDS[kind].items()
            if t.rstrip("?") in FLOAT_BOUNDS or t.rstrip("?") in INT_BOUNDS]
    return {**ev, rng.choice(nums): rng.choice([
        2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, 10**308, 10**400, 2**1024,
        -(2**63), -(2**63) - 1, -(2**64), -(10**308), -(2**1024), EPOCH_MAX, EPOCH_MAX + 1,
    ])}


def m_kind_specific(rng: random.Random, ev: dict[str, Any], kind: str) -> Any:
    if kind == "prediction":
        f = rng.choice(["features", "prediction", "segment", "latency_ms"])
        if f == "latency_ms":
            return {**ev, f: rng.choice([-1, -0.001, -5e-324, -MAX, "@@NEG_OVERFLOW@@"])}
        return {**ev, f: bad_value(rng, f)}
    if kind == "telemetry":
        return {**ev, "gpus": bad_gpus(rng)}
    return {**ev, "label": bad_value(rng, "label")}


MUTATIONS: dict[str, Mutation] = {
    "wrong_value": m_wrong_value,
    "wrong_type": m_wrong_type,
    "missing_required": m_missing,
    "null_required": m_null_required,
    "unknown_field": m_unknown_field,
    "overflow_1e400": m_overflow,
    "bad_schema_tag": m_bad_tag,
    "bad_name": m_bad_name,
    "bool_for_number": m_bool_for_number,
    "empty_string": m_empty_string,
    "too_long": m_too_long,
    "non_ascii": m_non_ascii,
    "huge_int": m_huge_int,
    "kind_specific": m_kind_specific,
}


def shuffled(rng: random.Random, obj: Any) -> Any:
    """Same object, keys in random order (the tag need not come first)."""
    if isinstance(obj, dict):
        items = list(obj.items())
        rng.shuffle(items)
        return dict(items)
    return obj


def serialize(rng: random.Random, obj: Any) -> str:
    sep = rng.choice([(",", ":"), (", ", ": ")])
    s = json.dumps(obj, ensure_ascii=rng.random() < 0.5, separators=sep, allow_nan=False)
    if "@@" in s:
        for marker, raw in RAW.items():
            s = s.replace(f'"{marker}"', raw)
    return s


def record(rng: random.Random, ev: Any, nest: bool = False) -> Any:
    r = rng.random()
    if r < 0.08:
        return [ev]  # a row batch of one
    if nest and r < 0.09:
        return [[ev]]  # never valid
    return ev


N_VALID = 1500
N_MUTATED = 2000


def generate(kind: str, seed: int, n_valid: int = N_VALID,
             n_mutated: int = N_MUTATED) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    cases: list[tuple[str, str]] = []
    for _ in range(n_valid):
        cases.append(("valid", serialize(rng, record(rng, shuffled(rng, VALID[kind](rng))))))
    names = list(MUTATIONS)
    for i in range(n_mutated):
        ev = VALID[kind](rng)
        label = names[i % len(names)]
        ev = MUTATIONS[label](rng, ev, kind)
        if rng.random() < 0.15:
            second = rng.choice(names)
            ev = MUTATIONS[second](rng, ev, kind)
            label = f"{label}+{second}"
        cases.append((label, serialize(rng, record(rng, shuffled(rng, ev), nest=True))))
    return cases


def compare(cases: list[tuple[str, str]]) -> tuple[list[str], Counter[str], Counter[str]]:
    decoder = Decoder()
    problems: list[str] = []
    rejected_by_ref: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for label, t in cases:
        ref_ok = reference_verdict(t)
        dl_ok = driftline_verdict(decoder, t)
        base = label.split("+")[0]
        seen[base] += 1
        if not ref_ok:
            rejected_by_ref[base] += 1
        if ref_ok != dl_ok:
            problems.append(
                f"[{label}] schema says {'VALID' if ref_ok else 'INVALID'} "
                f"({reference_reason(t)}); Driftline says {'VALID' if dl_ok else 'INVALID'} "
                f"({driftline_reason(t)})\n"
                f"    event: {t[:1500]}"
            )
    return problems, seen, rejected_by_ref


@pytest.mark.parametrize(("kind", "seed"), [("prediction", 1), ("feedback", 2), ("telemetry", 3)])
def test_single_events_agree(kind: str, seed: int) -> None:
    cases = generate(kind, seed)
    problems, seen, rejected = compare(cases)
    assert not problems, (f"{len(problems)} disagreement(s) of {len(cases)} cases:\n"
                          + "\n".join(problems[:10]))
    # The generator is doing its job: valid cases are valid, mutations mostly not.
    assert seen["valid"] == N_VALID and rejected["valid"] == 0
    n_mutated = sum(v for k, v in seen.items() if k != "valid")
    n_rejected = sum(v for k, v in rejected.items() if k != "valid")
    assert n_mutated == N_MUTATED and n_rejected > 0.85 * n_mutated
    for label in MUTATIONS:
        assert rejected[label] > 0, f"mutation {label} never produced an invalid {kind} event"


def test_other_records_agree() -> None:
    """Whole records that are not single events: arrays, scalars, column batches."""
    rng = random.Random(4)
    p, f = valid_prediction(rng), valid_feedback(rng)
    cases = [
        ("empty_array", "[]"), ("null", "null"), ("number", "42"), ("string", '"event"'),
        ("true", "true"), ("empty_object", "{}"), ("nested_empty", "[[]]"),
        ("array_of_scalar", "[1]"), ("array_of_null", "[null]"),
        ("columns_in_row_batch", json.dumps([{
            "schema": m.FEEDBACK_COLUMNS_V1, "model": "m", "event_id": ["a"], "label": [1],
            "event_time_ms": [1]}])),
        ("schema_only", json.dumps({"schema": m.PREDICTION_V1})),
        ("two_kinds", serialize(rng, {**p, **{k: v for k, v in f.items() if k != "schema"}})),
    ]
    problems, _, rejected = compare(cases)
    assert not problems, "\n".join(problems)
    assert sum(rejected.values()) == len(cases)


# -- column batches -----------------------------------------------------------
COLUMN_FIELDS = {
    "prediction": {"event_id": "eventId", "event_time_ms": "epochMs", "latency_ms": "nonneg",
                   "status": "status"},
    "feedback": {"event_id": "eventId", "label": "label", "event_time_ms": "epochMs"},
}


def column_events(rng: random.Random, kind: str, n: int) -> list[dict[str, Any]]:
    """``n`` single events of one model (version), about a third mutated per event."""
    model, version = name(rng), nonempty(rng, 64)
    tags = [key(rng) for _ in range(rng.randint(1, 3))] if rng.random() < 0.5 else []
    events = []
    for j in range(n):
        ev = VALID[kind](rng)
        ev["model"] = model
        ev["event_id"] = f"{j}-{rng.getrandbits(32):08x}"  # unique: no duplicate ids
        if kind == "prediction":
            ev["model_version"] = version
            # Tags drawn from a few shared names, so some events lack some tags
            # (a null entry in their column) and some have no segment at all.
            ev.pop("segment", None)
            mine = [t for t in tags if rng.random() < 0.7]
            if mine or (tags and rng.random() < 0.3):
                ev["segment"] = segment(rng, mine)
        if rng.random() < 0.35:
            # 1e400 inside batches is covered by the dedicated regression tests below.
            ev = mutate_value_without_overflow(rng, ev, kind)
        events.append(ev)
    return events


def mutate_value_without_overflow(rng: random.Random, ev: dict[str, Any],
                                  kind: str) -> dict[str, Any]:
    while True:
        mutated = mutate_value(rng, ev, kind)
        if all(no_overflow(v) for v in flat_values(mutated)):
            return mutated


def mutate_value(rng: random.Random, ev: dict[str, Any], kind: str) -> dict[str, Any]:
    """A per-event mutation that survives transposition into columns."""
    choices = list(COLUMN_FIELDS[kind])
    if kind == "prediction":
        choices += ["feature", "prediction", "request_id", "segment_value", "missing"]
    else:
        choices += ["missing"]
    f = rng.choice(choices)
    ev = dict(ev)
    if f == "missing":  # becomes null in its column
        del ev[rng.choice([c for c in COLUMN_FIELDS[kind] if c != "event_id"])]
    elif f == "event_id":
        ev[f] = rng.choice(["", sized(rng, 129), None, 12, ["x"], True])
    elif f == "feature":
        feats = dict(ev.get("features") or {})
        k = rng.choice(sorted(feats)) if feats else key(rng)
        feats[k] = rng.choice([{"nested": 1}, [1, 2], sized(rng, 1025), bad_float(rng, "finite"),
                               True, None, "ok", 1.5])
        ev["features"] = feats
    elif f == "prediction":
        ev[f] = rng.choice([bad_prediction(rng), prediction_value(rng)])
    elif f == "request_id":
        ev[f] = rng.choice([sized(rng, 257), sized(rng, 256), 5, ["r"], None])
    elif f == "segment_value":
        if ev.get("segment"):
            k = rng.choice(sorted(ev["segment"]))
            ev["segment"] = {**ev["segment"], k: rng.choice([1, True, sized(rng, 1025), {}])}
    else:
        ev[f] = bad_value(rng, COLUMN_FIELDS[kind][f])
    return ev


def no_overflow(v: Any) -> bool:
    return v not in (*OVERFLOW, "@@PAST_MAX_DECIMAL@@") if isinstance(v, str) else True


def transpose(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    first = events[0]
    if kind == "feedback":
        return {"schema": m.FEEDBACK_COLUMNS_V1, "model": first["model"],
                **{c: [e.get(c) for e in events] for c in COLUMN_FIELDS[kind]}}
    out: dict[str, Any] = {"schema": m.PREDICTION_COLUMNS_V1, "model": first["model"],
                           "model_version": first["model_version"]}
    for c in COLUMN_FIELDS[kind]:
        out[c] = [e.get(c) for e in events]
    names: dict[str, None] = {}
    for e in events:
        names.update(dict.fromkeys(e.get("features") or {}))
    if names or any("features" in e for e in events):
        out["features"] = {k: [(e.get("features") or {}).get(k) for e in events] for k in names}
    for c in ("prediction", "request_id"):
        if any(e.get(c) is not None for e in events):
            out[c] = [e.get(c) for e in events]
    tags: dict[str, None] = {}
    for e in events:
        tags.update(dict.fromkeys(e.get("segment") or {}))
    if tags:
        out["segment"] = {k: [(e.get("segment") or {}).get(k) for e in events] for k in tags}
    return out


def check_column_batch(decoder: Decoder, kind: str, events: list[dict[str, Any]],
                       rng: random.Random) -> tuple[list[str], list[bool]]:
    ref_ok = [reference_verdict(serialize(rng, e)) for e in events]
    batch = transpose(events, kind)
    t = serialize(rng, batch)
    out = decoder.decode(t.encode())
    batches = out.predictions if kind == "prediction" else out.feedback
    accepted = sorted(eid for b in batches for eid in b.event_id)
    expected = sorted(e["event_id"] for e, ok in zip(events, ref_ok, strict=True) if ok)
    rejected = sorted((r.reason.value, r.batch_index) for r in out.rejected)
    expected_rej = sorted(("invalid_event", j) for j, ok in enumerate(ref_ok) if not ok)
    record_ok = reference_verdict(t)
    problems = []
    if accepted != expected or rejected != expected_rej or record_ok != all(ref_ok):
        problems.append(
            f"{kind} column batch of {len(events)}: reference accepts {expected}, "
            f"rejects {[j for j, ok in enumerate(ref_ok) if not ok]} (whole record "
            f"{'valid' if record_ok else 'invalid'}); Driftline accepts {accepted}, rejects "
            f"{[(r.reason.value, r.batch_index, r.detail[:120]) for r in out.rejected]}\n"
            f"    batch: {t[:2000]}"
        )
    return problems, ref_ok


@pytest.mark.parametrize(("kind", "seed"), [("prediction", 5), ("feedback", 6)])
def test_column_batches_isolate_bad_events(kind: str, seed: int) -> None:
    rng = random.Random(seed)
    decoder = Decoder()
    problems: list[str] = []
    n_events = n_invalid = n_mixed = 0
    for _ in range(130):
        events = column_events(rng, kind, rng.choice([1, 2, 3, 5, 8, 13, 21]))
        found, valid = check_column_batch(decoder, kind, events, rng)
        problems += found
        n_events += len(events)
        n_invalid += valid.count(False)
        n_mixed += 0 < valid.count(False) < len(valid)
    assert not problems, f"{len(problems)} disagreement(s):\n" + "\n".join(problems[:5])
    assert n_events > 800 and n_invalid > 200 and n_mixed > 40


def flat_values(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in flat_values(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in flat_values(v)]
    return [obj]


# -- former codec gaps, now regression tests --------------------------------------
def _accepted_and_rejected(text_: str) -> tuple[list[str], list[tuple[str, int | None]]]:
    out = Decoder().decode(text_.encode())
    ids = [eid for b in [*out.predictions, *out.feedback] for eid in b.event_id]
    return ids, [(r.reason.value, r.batch_index) for r in out.rejected]


COLUMNS = {
    "schema": m.PREDICTION_COLUMNS_V1, "model": "fraud", "model_version": "v1",
    "event_id": ["a", "b", "c"], "event_time_ms": [1, 2, 3], "latency_ms": [1.0, 2.0, -3.0],
    "status": ["ok", "ok", "ok"],
}


def test_null_segment_entry_in_mixed_column_batch() -> None:
    """A null segment entry means "tag absent", on the slow path too."""
    batch = {**COLUMNS, "segment": {"tenant": ["acme", None, "acme"]}}
    assert reference_valid({**batch, "latency_ms": [1.0, 2.0, 3.0]})
    assert _accepted_and_rejected(json.dumps(batch)) == (["a", "b"], [("invalid_event", 2)])


def test_isolated_null_optional_column_in_mixed_column_batch() -> None:
    batch = {**COLUMNS, "prediction": None, "request_id": None, "segment": None}
    assert reference_valid({**batch, "latency_ms": [1.0, 2.0, 3.0]})
    assert _accepted_and_rejected(json.dumps(batch)) == (["a", "b"], [("invalid_event", 2)])


def test_isolated_overflow_in_one_event_of_a_column_batch() -> None:
    t = json.dumps({**COLUMNS, "latency_ms": [1.0, 2.0, "@@"]}).replace('"@@"', "1e400")
    assert _accepted_and_rejected(t) == (["a", "b"], [("invalid_event", 2)])


def test_isolated_overflow_in_one_event_of_a_row_batch() -> None:
    rows = [{"schema": m.FEEDBACK_V1, "event_id": e, "model": "fraud", "label": 1,
             "event_time_ms": 1} for e in "abc"]
    rows[2]["label"] = "@@"
    t = json.dumps(rows).replace('"@@"', "1e400")
    assert _accepted_and_rejected(t) == (["a", "b"], [("invalid_event", 2)])


def test_reference_shortcut_is_exact() -> None:
    """The per-branch shortcut gives jsonschema's own verdict on record.v1.json."""
    doc = _DOCS["record.v1.json"]
    annotations = {"$schema", "$id", "title", "description", "$defs", "examples"}
    assert set(doc) - annotations == {"oneOf"}
    cases = [t for kind, seed in (("prediction", 7), ("feedback", 8), ("telemetry", 9))
             for _, t in generate(kind, seed, n_valid=30, n_mutated=90)]
    for t in cases:
        obj = json.loads(t)
        assert RECORD.is_valid(obj) == reference_valid(obj), t


def test_documented_exclusions_are_real() -> None:
    """Each exclusion in the module docstring is a real difference, not a guess."""
    feedback = ('{"schema":"driftline.feedback/v1","event_id":"e","model":"m",'
                '"label":%s,"event_time_ms":%s}')
    decoder = Decoder()
    # Integral float for an integer field.
    t = feedback % ("1", "1.0")
    assert reference_verdict(t) and not driftline_verdict(decoder, t)
    # Integer literal just above the largest double.
    t = feedback % (str(int(MAX) + 1), "1")
    assert not reference_verdict(t) and driftline_verdict(decoder, t)
    t = feedback % (str(2**1024 - 2**970), "1")  # the rounding midpoint: both reject
    assert not reference_verdict(t) and not driftline_verdict(decoder, t)
    # Lone surrogate.
    t = feedback % ('"\\ud800"', "1")
    assert reference_verdict(t) and not driftline_verdict(decoder, t)
    # Duplicate event ids in one record.
    ev = json.loads(feedback % ("1", "1"))
    t = json.dumps([ev, ev])
    out = decoder.decode(t.encode())
    assert reference_verdict(t)
    assert [r.reason for r in out.rejected] == [Reason.DUPLICATE_EVENT_ID]
