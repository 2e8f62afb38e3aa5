"""``schemas/silence.v1.json`` describes exactly what ``Silence.encode`` writes and ``Silence.decode`` reads.

* encoded silences (varied matchers, the CLI's own parsing) validate, and
  carry every property the schema names;
* the schema's properties, required fields, patterns and bounds are the
  decoder's (``streams.core.alerting.silences``), so a field added or made
  optional on one side only fails here;
* a table of broken values gets the same verdict from both, except the rows
  marked as checks JSON Schema cannot state (one field against another, regex
  compilation, integral floats), which the schema's description lists;
* the examples (in the schema and in ``schemas/README.md``) validate, decode
  and re-encode to themselves.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from streams.core.alerting import silences as sil
from streams.core.alerting.silences import Matcher, Silence, SilenceSet

ROOT = Path(__file__).resolve().parents[3]
SCHEMA: dict[str, Any] = json.loads((ROOT / "schemas" / "silence.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
MATCHER = SCHEMA["$defs"]["matcher"]
EXAMPLE: dict[str, Any] = SCHEMA["examples"][0]
T0 = 1_767_225_600_000


def schema_ok(value: Any) -> bool:
    return bool(VALIDATOR.is_valid(value))


def decoder_ok(value: Any) -> bool:
    """Whether a worker accepts ``value`` as the record of its id (``SilenceSet.apply``, as on the topic)."""
    try:
        SilenceSet().apply(str(value.get("id")) if isinstance(value, dict) else "x", orjson.dumps(value), T0)
    except ValueError:
        return False
    return True


# -- the file --------------------------------------------------------------------------------------
def test_is_a_2020_12_schema_in_the_house_style() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == "https://driftline.dev/schemas/silence.v1.json"
    assert SCHEMA["title"] and SCHEMA["description"] and SCHEMA["examples"]


# -- what the encoder writes -----------------------------------------------------------------------
SILENCES = [
    Silence("3f9c2a7d41e8b605", (Matcher.parse("model=fraud"),), T0, T0 + 7_200_000, "alice", "retraining"),
    Silence("maint.42:eu-west_1", tuple(Matcher.parse(t) for t in (
        'alertname=~".*drift"', "env!=staging", "severity!~'info|warning'", "model_version=v4")),
        0, sil._MAX_EPOCH_MS, "ops@acme.example", "a comment with\nnewlines, \"quotes\" and ünïcödé"),
    Silence("x", (Matcher("_a" + "b" * 126, "v" * 1024),), T0, T0 + 1, "b" * 1024, "c" * 1024),
]


@pytest.mark.parametrize("silence", SILENCES, ids=lambda s: s.id)
def test_encoded_silences_validate_and_name_every_property(silence: Silence) -> None:
    value = orjson.loads(silence.encode())
    VALIDATOR.validate(value)
    assert set(value) == set(SCHEMA["properties"])  # writers write every field, `v` included
    for m in value["matchers"]:
        assert set(m) == set(MATCHER["properties"])
    assert Silence.decode(silence.encode()) == silence


# -- the decoder's fields, patterns and bounds ------------------------------------------------------
def test_properties_and_required_fields_are_the_decoders() -> None:
    assert set(SCHEMA["properties"]) == sil._SILENCE_KEYS
    assert set(MATCHER["properties"]) == sil._MATCHER_KEYS
    assert SCHEMA["additionalProperties"] is False and MATCHER["additionalProperties"] is False
    # required: exactly the fields whose absence the decoder refuses
    for key in sil._SILENCE_KEYS:
        value = {k: v for k, v in EXAMPLE.items() if k != key}
        assert decoder_ok(value) is (key not in SCHEMA["required"]), key
        assert schema_ok(value) is (key not in SCHEMA["required"]), key
    for key in sil._MATCHER_KEYS:
        value = copy.deepcopy(EXAMPLE)
        del value["matchers"][0][key]
        assert decoder_ok(value) is (key not in MATCHER["required"]), key
        assert schema_ok(value) is (key not in MATCHER["required"]), key
    assert set(SCHEMA["required"]) == sil._SILENCE_KEYS - {"v"}
    assert set(MATCHER["required"]) == {"name", "value"}


def test_patterns_and_bounds_are_the_decoders() -> None:
    props = SCHEMA["properties"]
    assert props["id"]["pattern"] == sil._ID.pattern
    assert MATCHER["properties"]["name"]["pattern"] == sil._LABEL_NAME.pattern
    assert props["v"]["const"] == sil._VERSION
    for key in ("starts_at_ms", "ends_at_ms"):
        assert props[key]["maximum"] == sil._MAX_EPOCH_MS and props[key]["minimum"] == 0


def test_not_all_whitespace_is_pythons_strip() -> None:
    """``created_by`` and ``comment`` must hold a character ``str.strip`` keeps: the pattern lists
    Python's whitespace explicitly (JSON Schema's ECMA ``\\S`` differs from Python's on a few)."""
    pattern = re.compile(SCHEMA["properties"]["comment"]["pattern"])
    assert SCHEMA["properties"]["created_by"]["pattern"] == pattern.pattern
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        c = chr(code)
        assert (pattern.search(c) is not None) is (c.strip() != ""), hex(code)


# -- broken values ---------------------------------------------------------------------------------
def with_(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(v: dict[str, Any]) -> None:
        v.update(changes)
    return edit


def matcher_(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(v: dict[str, Any]) -> None:
        v["matchers"][0].update(changes)
        for k in [k for k, x in v["matchers"][0].items() if x is DROP]:
            del v["matchers"][0][k]
    return edit


DROP = object()


def drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda v: v.pop(key)


def only(*matchers: Any) -> Callable[[dict[str, Any]], None]:
    return with_(matchers=list(matchers))


EQ = {"name": "model", "value": "fraud", "is_regex": False, "is_equal": True}

# (case, edit of the example, schema accepts, decoder accepts)
CASES: list[tuple[str, Callable[[dict[str, Any]], None], bool, bool]] = [
    ("the example", lambda v: None, True, True),
    ("v omitted (read as 1)", drop("v"), True, True),
    ("matcher booleans omitted (defaults)", matcher_(is_regex=DROP, is_equal=DROP), True, True),
    ("ends one millisecond after it starts", with_(starts_at_ms=T0, ends_at_ms=T0 + 1), True, True),
    ("missing matchers", drop("matchers"), False, False),
    ("no matchers", only(), False, False),
    ("matchers not a list", with_(matchers=EQ), False, False),
    ("a matcher as text", only("model=fraud"), False, False),
    ("a matcher with an op field", matcher_(op="=~"), False, False),
    ("a matcher with an op instead of the booleans", only({"name": "model", "op": "!=", "value": "x"}),
     False, False),
    ("is_regex not a boolean", matcher_(is_regex="yes"), False, False),
    ("is_equal null", matcher_(is_equal=None), False, False),
    ("matcher without name", matcher_(name=DROP), False, False),
    ("matcher without value", matcher_(value=DROP), False, False),
    ("matcher name starting with a digit", matcher_(name="1model"), False, False),
    ("matcher name with a dash", matcher_(name="model-version"), False, False),
    ("matcher name with a final newline", matcher_(name="model\n"), False, False),
    ("matcher name of 129 characters", matcher_(name="m" * 129), False, False),
    ("matcher value of 1025 characters", matcher_(value="v" * 1025), False, False),
    ("matcher value a number", matcher_(value=4), False, False),
    ("empty id", with_(id=""), False, False),
    ("id starting with a dash", with_(id="-x"), False, False),
    ("id with a slash", with_(id="a/b"), False, False),
    ("id of 129 characters", with_(id="a" * 129), False, False),
    ("id with a final newline", with_(id="abc\n"), False, False),
    ("starts before the epoch", with_(starts_at_ms=-1), False, False),
    ("ends after 9999", with_(ends_at_ms=sil._MAX_EPOCH_MS + 1), False, False),
    ("a time as a string", with_(starts_at_ms=str(T0)), False, False),
    ("a time as a boolean", with_(starts_at_ms=True), False, False),
    ("a time as null", with_(ends_at_ms=None), False, False),
    ("missing ends_at_ms", drop("ends_at_ms"), False, False),
    ("empty created_by", with_(created_by=""), False, False),
    ("blank comment", with_(comment=" \t\n\u3000"), False, False),
    ("comment of 1025 characters", with_(comment="c" * 1025), False, False),
    ("missing comment", drop("comment"), False, False),
    ("an unknown field", with_(labels={"team": "risk"}), False, False),
    ("version 2", with_(v=2), False, False),
    ("version as a string", with_(v="1"), False, False),
    # checks JSON Schema cannot state (the schema's description lists them): the decoder's alone
    ("ends before it starts", with_(starts_at_ms=T0, ends_at_ms=T0 - 1), True, False),
    ("ends when it starts", with_(starts_at_ms=T0, ends_at_ms=T0), True, False),
    ("a regex that does not compile", matcher_(value="(", is_regex=True), True, False),
    ("a silence of everything", only({"name": "alertname", "value": ".*", "is_regex": True}), True, False),
    ("only matchers of the empty string", only({"name": "env", "value": ""}, {"name": "x", "value": "y",
                                                                            "is_equal": False}), True, False),
    ("a time as an integral float", with_(starts_at_ms=float(T0)), True, False),
]


@pytest.mark.parametrize(("edit", "by_schema", "by_decoder"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_broken_values_get_the_same_verdict(
    edit: Callable[[dict[str, Any]], None], by_schema: bool, by_decoder: bool
) -> None:
    value = copy.deepcopy(EXAMPLE)
    edit(value)
    assert schema_ok(value) is by_schema
    assert decoder_ok(value) is by_decoder


def test_a_value_that_is_not_an_object_is_refused_by_both() -> None:
    for value in ([EXAMPLE], "silence", None, 1):
        assert not schema_ok(value)
        with pytest.raises(ValueError):
            Silence.decode(orjson.dumps(value))


# -- examples --------------------------------------------------------------------------------------
README_BLOCKS = re.findall(r"^```json[ \t]*\n(.*?)^```", (ROOT / "schemas" / "README.md").read_text(),
                           flags=re.M | re.S)
README_SILENCES = [json.loads(b) for b in README_BLOCKS if '"matchers"' in b]


@pytest.mark.parametrize("example", [*SCHEMA["examples"], *README_SILENCES])
def test_examples_validate_decode_and_reencode_to_themselves(example: dict[str, Any]) -> None:
    VALIDATOR.validate(example)
    silence = Silence.decode(orjson.dumps(example))
    assert silence.to_json() == example
    assert SilenceSet().apply(silence.id, orjson.dumps(example), T0) == silence


def test_the_readme_shows_a_silence() -> None:
    assert README_SILENCES
