"""``examples/rollback_on_accuracy.py``: the decision table, the atomic registry write, record handling.

The example is loaded from its path (``examples/`` is not part of the
installed package); the integration test reuses :func:`load_example` and
:func:`accuracy_alert`.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import orjson
import pytest
from jsonschema import Draft202012Validator

from streams.events.models import AlertV1

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "rollback_on_accuracy.py"
ALERT_SCHEMA = Draft202012Validator(json.loads((ROOT / "schemas" / "alert.v1.json").read_text()))


def load_example() -> ModuleType:
    """The example as a module, imported once by path."""
    name = "driftline_example_rollback_on_accuracy"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


rb = load_example()


def accuracy_alert(**changes: Any) -> dict[str, Any]:
    """A firing ``accuracy_low`` alert on fraud v2, as the lifecycle writes it; a ``None`` drops a key."""
    alert: dict[str, Any] = {
        "schema": "driftline.alert/v1",
        "fingerprint": "5d1c0a9e4f7b2c38",
        "status": "firing",
        "severity": "critical",
        "model": "fraud",
        "model_version": "v2",
        "signal": "accuracy_low",
        "value": 0.71,
        "threshold": 0.8,
        "window_ms": 3_600_000,
        "starts_at_ms": 1_767_232_800_000,
        "evidence": {"suggested_action": "retrain", "active_since_ms": 1_767_232_200_000},
        "labels": {"alertname": "accuracy_low", "model": "fraud", "model_version": "v2",
                   "metric": "labels.classification.accuracy"},
        "annotations": {"summary": "fraud v2: accuracy 0.710 below 0.8 on 1h of labels"},
    }
    alert.update(changes)
    return {k: v for k, v in alert.items() if v is not None}


MUTED = {"suggested_action": "retrain", "active_since_ms": 1, "muted_by": ["silence:maint-42"]}
REGISTRY = {"fraud": {"versions": ["v1", "v2"], "active": "v2"}}


def write_registry(path: Path, registry: dict[str, Any]) -> Path:
    path.write_text(json.dumps(registry))
    return path


# -- the decision table ----------------------------------------------------------------------------
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    # (case, changes to the alert, registry, version to switch to or None)
    ("firing on the active version", {}, REGISTRY, "v1"),
    ("the version deployed just before", {}, {"fraud": {"versions": ["v1", "v2", "v3"], "active": "v2"}},
     "v1"),
    ("resolved: no roll-forward", {"status": "resolved", "ends_at_ms": 1_767_236_400_000}, REGISTRY, None),
    ("muted by a silence", {"evidence": MUTED}, REGISTRY, None),
    ("muted by an inhibiting alert", {"evidence": {"muted_by": ["inhibited_by:00112233445566ff"]}},
     REGISTRY, None),
    ("another alert", {"signal": "drift"}, REGISTRY, None),
    ("no model version", {"model_version": None}, REGISTRY, None),
    ("not the active version (rolled back already)", {},
     {"fraud": {"versions": ["v1", "v2"], "active": "v1"}}, None),
    ("a challenger version", {"model_version": "v3"},
     {"fraud": {"versions": ["v1", "v2", "v3"], "active": "v2"}}, None),
    ("first version: nothing to go back to", {"model_version": "v1"},
     {"fraud": {"versions": ["v1"], "active": "v1"}}, None),
    ("a model the registry does not know", {"model": "churn"}, REGISTRY, None),
]


@pytest.mark.parametrize(("changes", "registry", "to_version"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_decide(changes: dict[str, Any], registry: dict[str, Any], to_version: str | None) -> None:
    alert = accuracy_alert(**changes)
    ALERT_SCHEMA.validate(alert)  # every case is a valid alert event: the decision, not the decoder, says no
    msgspec.convert(alert, AlertV1)
    d = rb.decide(alert, registry)
    assert d.act is (to_version is not None), d.reason
    assert d.reason
    if to_version is not None:
        assert (d.model, d.from_version, d.to_version) == ("fraud", alert["model_version"], to_version)


def test_the_alert_names_are_configurable() -> None:
    f1 = accuracy_alert(signal="f1_low")
    assert not rb.decide(f1, REGISTRY).act
    assert rb.decide(f1, REGISTRY, alert_names={"accuracy_low", "f1_low"}).to_version == "v1"
    assert not rb.decide(accuracy_alert(), REGISTRY, alert_names={"f1_low"}).act


def test_the_docstring_example_runs() -> None:
    assert doctest.testmod(rb).failed == 0


# -- the registry ----------------------------------------------------------------------------------
def test_switch_writes_the_new_active_version_and_keeps_the_rest(tmp_path: Path) -> None:
    registry = {"fraud": {"versions": ["v1", "v2"], "active": "v2", "endpoint": "http://fraud"},
                "churn": {"versions": ["a"], "active": "a"}}
    path = write_registry(tmp_path / "registry.json", registry)
    path.chmod(0o644)
    assert rb.switch_active(path, "fraud", "v1") is True
    expected = {**registry, "fraud": {**registry["fraud"], "active": "v1"}}
    assert json.loads(path.read_text()) == rb.load_registry(path) == expected
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["registry.json"]  # no temporary file left


def test_switching_to_the_active_version_is_a_no_op(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "registry.json", {"fraud": {"versions": ["v1", "v2"], "active": "v1"}})
    before = path.stat()
    assert rb.switch_active(path, "fraud", "v1") is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_the_registry_is_replaced_by_a_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new content goes to a temporary file renamed over the registry: a crash before the
    rename leaves the old registry whole, and no temporary file behind."""
    path = write_registry(tmp_path / "registry.json", REGISTRY)
    original = path.read_bytes()
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        renames.append((src, dst))
        assert json.loads(Path(src).read_text())["fraud"]["active"] == "v1"  # complete before the rename
        assert path.read_bytes() == original
        raise OSError("crash before the rename")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="crash"):
        rb.switch_active(path, "fraud", "v1")
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["registry.json"]
    src, dst = renames[0]
    assert Path(src).parent == tmp_path and Path(dst) == path  # same directory: rename is atomic

    monkeypatch.setattr(os, "replace", real_replace)
    assert rb.switch_active(path, "fraud", "v1") is True


@pytest.mark.parametrize("registry", [
    [],
    {"fraud": ["v1", "v2"]},
    {"fraud": {"versions": "v1", "active": "v1"}},
    {"fraud": {"versions": ["v1", 2], "active": "v1"}},
    {"fraud": {"versions": ["v1", "v2"], "active": "v3"}},
    {"fraud": {"versions": ["v1", "v2"]}},
])
def test_a_malformed_registry_is_refused(tmp_path: Path, registry: Any) -> None:
    path = write_registry(tmp_path / "registry.json", registry)
    with pytest.raises(ValueError, match=r"registry\.json"):
        rb.load_registry(path)


def test_switching_to_an_unknown_version_is_refused(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "registry.json", REGISTRY)
    with pytest.raises(ValueError, match="v9"):
        rb.switch_active(path, "fraud", "v9")


# -- one record ------------------------------------------------------------------------------------
def test_handle_acts_once_and_a_replay_changes_nothing(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "registry.json", {"fraud": {"versions": ["v1", "v2", "v3"],
                                                                 "active": "v3"}})
    record = orjson.dumps(accuracy_alert(model_version="v3"))
    first = rb.handle(record, path, rb.DEFAULT_ALERT_NAMES)
    assert first.act and first.to_version == "v2"
    assert rb.load_registry(path)["fraud"]["active"] == "v2"
    replay = rb.handle(record, path, rb.DEFAULT_ALERT_NAMES)  # a crash before the commit: read again
    assert not replay.act and "not the active version" in replay.reason
    assert rb.load_registry(path)["fraud"]["active"] == "v2"  # not rolled back twice


@pytest.mark.parametrize("value", [None, b"", b"not json", b'{"schema": "driftline.alert/v1"}',
                                   orjson.dumps({**accuracy_alert(), "schema": "driftline.signal/v1"}),
                                   orjson.dumps(accuracy_alert(status="exploded"))])
def test_handle_skips_what_is_not_an_alert(tmp_path: Path, value: bytes | None,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = write_registry(tmp_path / "registry.json", REGISTRY)
    with caplog.at_level(logging.WARNING):
        assert rb.handle(value, path, rb.DEFAULT_ALERT_NAMES) is None
    assert "not a driftline.alert/v1 event" in caplog.text
    assert rb.load_registry(path) == REGISTRY


def test_handle_ignores_fields_added_by_later_versions(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "registry.json", REGISTRY)
    record = orjson.dumps({**accuracy_alert(), "runbook_url": "https://wiki/accuracy"})
    assert rb.handle(record, path, rb.DEFAULT_ALERT_NAMES).act


def test_the_command_line_refuses_a_missing_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        rb.main(["--registry", str(tmp_path / "missing.json"), "--bootstrap", "127.0.0.1:1"])
    assert exc.value.code == 2 and "--registry" in capsys.readouterr().err
