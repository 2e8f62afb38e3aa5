"""The published JSON Schemas in ``schemas/``: well-formed, exemplified, and mirroring models.py.

* every file is a valid draft 2020-12 schema, named and ``$id``-ed by version;
* every ``examples`` entry validates against its schema and decodes with
  :class:`streams.events.codec.Decoder` without a single reject (alerts and
  dead letters: with ``msgspec.json.decode`` into their Struct);
* every schema mirrors its msgspec Struct node by node (field names, required
  fields, unknown fields, types, bounds, lengths, patterns, enums), walked with
  ``msgspec.inspect`` so that a bound changed on one side only fails here;
* every fenced ``json`` block of ``schemas/README.md`` that carries a ``schema``
  tag is valid, and every fenced ``jsonc`` counter-example is dead-lettered for
  the reason its first line names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from streams.core.snapshot import METRICS_V1
from streams.events import models as m
from streams.events.codec import Decoder
from streams.events.reasons import Reason

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
BASE = "https://driftline.dev/schemas/"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

STRUCTS: dict[str, type[msgspec.Struct]] = {
    "prediction.v1.json": m.PredictionV1,
    "prediction-columns.v1.json": m.PredictionColumnsV1,
    "feedback.v1.json": m.FeedbackV1,
    "feedback-columns.v1.json": m.FeedbackColumnsV1,
    "telemetry.v1.json": m.TelemetryV1,
    "alert.v1.json": m.AlertV1,
    "signal.v1.json": m.SignalV1,
    "dead-letter.v1.json": m.DeadLetterV1,
}
# Written by Driftline from plain data, with no Struct to mirror: checked against the engine's own
# output in tests/unit/core/test_snapshot_schema.py.
METRICS_FILE = "metrics.v1.json"
FILES = sorted([*STRUCTS, "record.v1.json", METRICS_FILE])
OUTPUTS = {m.ALERT_V1: m.AlertV1, m.SIGNAL_V1: m.SignalV1, m.DEAD_LETTER_V1: m.DeadLetterV1}
TAG_FILE = {
    m.PREDICTION_V1: "prediction.v1.json",
    m.PREDICTION_COLUMNS_V1: "prediction-columns.v1.json",
    m.FEEDBACK_V1: "feedback.v1.json",
    m.FEEDBACK_COLUMNS_V1: "feedback-columns.v1.json",
    m.TELEMETRY_V1: "telemetry.v1.json",
    m.ALERT_V1: "alert.v1.json",
    m.SIGNAL_V1: "signal.v1.json",
    m.DEAD_LETTER_V1: "dead-letter.v1.json",
}

DOCS = {name: json.loads((SCHEMAS / name).read_text()) for name in FILES}
REGISTRY: Registry = Registry().with_resources(
    (d["$id"], Resource.from_contents(d)) for d in DOCS.values()
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(DOCS[name], registry=REGISTRY)


def events_in(record: Any) -> int:
    """How many events a valid record holds."""
    if isinstance(record, list):
        return len(record)
    if record["schema"] in (m.PREDICTION_COLUMNS_V1, m.FEEDBACK_COLUMNS_V1):
        return len(record["event_id"])
    return 1


def assert_accepted(value: Any, where: str) -> None:
    """Valid against its schema and decoded by Driftline without a reject."""
    tag = value.get("schema") if isinstance(value, dict) else None
    if tag == METRICS_V1:  # an output with no Struct: the schema is all there is to check
        validator(METRICS_FILE).validate(value)
        return
    if tag in OUTPUTS:
        validator(TAG_FILE[tag]).validate(value)
        msgspec.json.decode(json.dumps(value).encode(), type=OUTPUTS[tag])
        return
    validator("record.v1.json").validate(value)
    if tag is not None:
        validator(TAG_FILE[tag]).validate(value)
    out = Decoder().decode(json.dumps(value).encode())
    assert not out.rejected, f"{where}: {[(r.reason, r.detail) for r in out.rejected]}"
    assert out.n_valid == events_in(value), where


# -- files ---------------------------------------------------------------------
def test_the_expected_files_exist() -> None:
    # silence.v1.json describes a control-topic value, not an event: no `schema` tag, so it is
    # not in FILES (whose examples validate as records); test_silence_schema.py covers it.
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted([*FILES, "silence.v1.json"])


@pytest.mark.parametrize("name", FILES)
def test_is_a_2020_12_schema_with_a_versioned_id(name: str) -> None:
    doc = DOCS[name]
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == DRAFT
    assert doc["$id"] == BASE + name
    assert re.fullmatch(r"[a-z]+(-[a-z]+)*\.v[1-9][0-9]*\.json", name)
    assert doc.get("title") and doc.get("description")


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_schema_tag_is_a_required_const(name: str) -> None:
    doc = DOCS[name]
    tag = mi.type_info(STRUCTS[name]).tag
    assert doc["properties"]["schema"]["const"] == tag
    assert "schema" in doc["required"]
    assert TAG_FILE[tag] == name
    version = re.fullmatch(r"driftline\.[a-z-]+/v([0-9]+)", tag)
    assert version and name.endswith(f".v{version.group(1)}.json")


def test_record_refers_to_every_input_schema() -> None:
    doc = DOCS["record.v1.json"]
    refs = [b["$ref"] for b in doc["oneOf"]]
    assert refs == ["prediction.v1.json", "feedback.v1.json", "telemetry.v1.json",
                    "#/$defs/rowBatch", "prediction-columns.v1.json", "feedback-columns.v1.json"]
    row = doc["$defs"]["rowBatch"]
    assert row["minItems"] == 1 and row["maxItems"] == m.MAX_BATCH_EVENTS
    assert [b["$ref"] for b in row["items"]["oneOf"]] == refs[:3]


# -- examples ------------------------------------------------------------------
@pytest.mark.parametrize("name", FILES)
def test_examples_validate_and_decode(name: str) -> None:
    examples = DOCS[name]["examples"]
    assert examples
    for i, example in enumerate(examples):
        validator(name).validate(example)
        assert_accepted(example, f"{name} example {i}")


def test_examples_cover_the_interesting_shapes() -> None:
    preds = DOCS["prediction.v1.json"]["examples"]
    values = [v for e in preds for v in e.get("features", {}).values()]
    assert any(isinstance(v, str) for v in values)  # categorical
    assert any(isinstance(v, bool) for v in values)  # categorical, boolean
    assert any(isinstance(v, float | int) and not isinstance(v, bool) for v in values)
    assert None in values
    assert any(isinstance(e.get("prediction"), dict) for e in preds)  # probabilities
    assert any(e.get("segment") for e in preds)
    assert any(e.get("gpus") for e in DOCS["telemetry.v1.json"]["examples"])
    for name in ("prediction-columns.v1.json", "feedback-columns.v1.json"):
        assert all(len(e["event_id"]) == 3 for e in DOCS[name]["examples"])
    forms = [type(e).__name__ if isinstance(e, list) else e["schema"]
             for e in DOCS["record.v1.json"]["examples"]]
    assert "list" in forms and any(f.endswith("-columns/v1") for f in forms)


# -- mirror of models.py ------------------------------------------------------
def resolve(node: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref``s (the schemas use them only for whole subschemas)."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        assert set(node) <= {"$ref", "description"}, node
        node = doc["$defs"][ref.removeprefix("#/$defs/")]
    return node


def branches(node: dict[str, Any], doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of a (possibly nested) ``anyOf``, each resolved."""
    node = resolve(node, doc)
    if "anyOf" in node:
        assert set(node) <= {"anyOf", "description"}, node
        return [b for sub in node["anyOf"] for b in branches(sub, doc)]
    return [node]


ANNOTATIONS = {"description", "title", "examples", "default", "contentEncoding", "$comment"}


def keywords(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in ANNOTATIONS}


def expect_mirror(t: Any, node: dict[str, Any], doc: dict[str, Any], path: str) -> None:
    """Assert that the JSON Schema ``node`` accepts what the msgspec type ``t`` accepts."""
    if isinstance(t, mi.UnionType):
        alts = branches(node, doc)
        assert len(alts) == len(t.types), f"{path}: {len(alts)} alternatives for {t}"
        for sub in t.types:
            matches = [a for a in alts if json_type(a) == json_type_of(sub)]
            assert len(matches) == 1, f"{path}: no single alternative for {sub}"
            expect_mirror(sub, matches[0], doc, path)
        return
    node = resolve(node, doc)
    if "anyOf" in node:
        alts = branches(node, doc)
        assert len(alts) == 1, f"{path}: {node} is a union, {t} is not"
        node = alts[0]
    kw = keywords(node)
    if isinstance(t, mi.FloatType):
        assert t.gt is None and t.lt is None and t.multiple_of is None
        assert kw == {"type": "number", "minimum": t.ge, "maximum": t.le}, path
    elif isinstance(t, mi.IntType):
        assert t.gt is None and t.lt is None and t.multiple_of is None
        want = {"type": "integer", "minimum": t.ge, "maximum": t.le}
        assert kw == {k: v for k, v in want.items() if v is not None}, path
    elif isinstance(t, mi.StrType):
        want = {"type": "string", "minLength": t.min_length, "maxLength": t.max_length,
                "pattern": t.pattern}
        assert kw == {k: v for k, v in want.items() if v is not None}, path
    elif isinstance(t, mi.BoolType):
        assert kw == {"type": "boolean"}, path
    elif isinstance(t, mi.NoneType):
        assert kw == {"type": "null"}, path
    elif isinstance(t, mi.LiteralType):
        assert set(kw) == {"enum"} and sorted(kw["enum"]) == sorted(t.values), path
    elif isinstance(t, mi.ListType):
        want = {"type": "array", "minItems": t.min_length, "maxItems": t.max_length}
        assert {k: v for k, v in kw.items() if k != "items"} == {
            k: v for k, v in want.items() if v is not None}, path
        expect_mirror(t.item_type, kw["items"], doc, f"{path}[]")
    elif isinstance(t, mi.DictType):
        want = {"type": "object", "minProperties": t.min_length, "maxProperties": t.max_length}
        rest = {k: v for k, v in kw.items() if k not in ("propertyNames", "additionalProperties")}
        assert rest == {k: v for k, v in want.items() if v is not None}, path
        expect_mirror(t.key_type, kw["propertyNames"] | {"type": "string"}, doc, f"{path}.<key>")
        expect_mirror(t.value_type, kw["additionalProperties"], doc, f"{path}.*")
    elif isinstance(t, mi.StructType):
        expect_struct(t, node, doc, path)
    else:
        raise AssertionError(f"{path}: no rule for {t}")


def json_type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return "string"
    return node["type"]


def json_type_of(t: Any) -> str:
    return {mi.FloatType: "number", mi.IntType: "integer", mi.StrType: "string",
            mi.BoolType: "boolean", mi.NoneType: "null", mi.DictType: "object",
            mi.ListType: "array", mi.StructType: "object", mi.LiteralType: "string"}[type(t)]


def expect_struct(t: mi.StructType, node: dict[str, Any], doc: dict[str, Any], path: str) -> None:
    props = node["properties"]
    names = {f.encode_name for f in t.fields}
    required = {f.encode_name for f in t.fields if f.required}
    if t.tag_field is not None:
        names.add(t.tag_field)
        required.add(t.tag_field)
        assert props[t.tag_field]["const"] == t.tag
    assert set(props) == names, f"{path}: fields differ"
    assert set(node["required"]) == required, f"{path}: required fields differ"
    assert node.get("additionalProperties", True) is (not t.forbid_unknown_fields), path
    assert node["type"] == "object"
    for f in t.fields:
        expect_mirror(f.type, props[f.encode_name], doc, f"{path}.{f.encode_name}")


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_schema_mirrors_its_struct(name: str) -> None:
    doc = DOCS[name]
    expect_struct(mi.type_info(STRUCTS[name]), doc, doc, name)


def test_patterns_are_the_models_patterns() -> None:
    name = mi.type_info(m.PredictionV1).fields[1].type
    assert isinstance(name, mi.StrType) and name.pattern
    # Python's ``$`` also matches before a final newline; ECMA-262's does not.
    assert name.pattern.endswith("$(?!\\n)")
    for model in ("fraud\n", "\nfraud", "fraud\r", "fraud "):
        assert not re.search(name.pattern, model)
        event = {**DOCS["feedback.v1.json"]["examples"][0], "model": model}
        assert not validator("record.v1.json").is_valid(event)
        out = Decoder().decode(json.dumps(event).encode())
        assert [r.reason for r in out.rejected] == [Reason.INVALID_EVENT]


# -- README --------------------------------------------------------------------
README = (SCHEMAS / "README.md").read_text()
BLOCKS = re.findall(r"^```(json|jsonc)[ \t]*\n(.*?)^```", README, flags=re.M | re.S)


def tagged(value: Any) -> bool:
    if isinstance(value, dict):
        return "schema" in value
    return isinstance(value, list) and bool(value) and all(tagged(v) for v in value)


def test_readme_has_examples() -> None:
    assert sum(lang == "json" for lang, _ in BLOCKS) >= 8
    assert sum(lang == "jsonc" for lang, _ in BLOCKS) >= 4


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "json"])
def test_readme_json_blocks_are_valid(index: int) -> None:
    value = json.loads(BLOCKS[index][1])
    if tagged(value):
        assert_accepted(value, f"README block {index}")


COUNTER = re.compile(r"// dead-lettered: ([a-z_]+)(?: at batch_index (\d+))?"
                     r"( \(valid against the schema\))?")


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "jsonc"])
def test_readme_counter_examples_are_dead_lettered(index: int) -> None:
    """A ``jsonc`` block is a record value after a first line naming its fate.

    ``// dead-lettered: <reason>[ at batch_index <i>][ (valid against the schema)]``;
    the suffix marks what JSON Schema cannot see (array lengths, repeated ids,
    integral floats); without it a JSON record must be invalid against the schema.
    """
    first, _, body = BLOCKS[index][1].partition("\n")
    found = COUNTER.fullmatch(first.strip())
    assert found, f"README block {index}: first line must name the reason: {first!r}"
    reason, at, schema_valid = Reason(found.group(1)), found.group(2), bool(found.group(3))
    data = body.strip().encode() if body.strip() != "(empty)" else b""
    out = Decoder().decode(data)
    got = [(r.reason, r.batch_index) for r in out.rejected]
    assert (reason, None if at is None else int(at)) in got, got
    if reason not in (Reason.EMPTY, Reason.UNDECODABLE, Reason.OVERSIZED):
        assert validator("record.v1.json").is_valid(json.loads(data)) is schema_valid
