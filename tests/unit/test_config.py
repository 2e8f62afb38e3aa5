"""Settings: YAML sections become typed, validated config; every bad value names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import ConfigError, load_settings


def load(tmp_path: Path, text: str, **env: str):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(text)
    return load_settings(cfg, env=env)


def test_defaults_without_a_file() -> None:
    s = load_settings(env={})
    assert s.detection.enabled and s.detection.data.window_events == 5000
    assert s.detection.concept_for("any").adwin_delta == s.detection.concept.adwin_delta


def test_detection_sections_durations_and_per_model_concept_parameters(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """
detection:
  data: {window_events: 2000, window: 30s, correction: holm, min_psi: 0.2}
  anomaly: {threshold: 0.7, height: 12}
  ops: {silence_after: 45s, gpu_util_percent: 90}
  concept: {adwin_delta: 0.001}
models:
  fraud: {task: classification, concept_drift: {ph_threshold: 40}}
""",
    )
    d = s.detection
    assert (d.data.window_events, d.data.window_ms, d.data.correction, d.data.min_psi) == (
        2000,
        30_000,
        "holm",
        0.2,
    )
    assert (d.anomaly.threshold, d.anomaly.height, d.ops.silence_after_ms, d.ops.gpu_util_percent) == (
        0.7,
        12,
        45_000,
        90.0,
    )
    fraud = d.concept_for("fraud")
    assert fraud.ph_threshold == 40.0 and fraud.adwin_delta == 0.001  # per-model on top of the section
    assert d.concept_for("other").ph_threshold != 40.0
    assert s.metrics.model("fraud").task.task == "classification"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("detection: {data: {window_events: 0}}", "detection.data.window_events"),
        ("detection: {data: {window_events: 2.5}}", "detection.data.window_events"),
        ("detection: {data: {alpha: 2}}", "detection.data.alpha"),
        ("detection: {data: {correction: bonferroni}}", "detection.data.correction"),
        ("detection: {data: {window: soon}}", "detection.data.window"),
        ("detection: {anomaly: {threshold: 1.5}}", "detection.anomaly.threshold"),
        ("detection: {anomaly: {enabled: yes please}}", "detection.anomaly.enabled"),
        ("detection: {ops: {gpu_memory_fraction: 0}}", "detection.ops.gpu_memory_fraction"),
        ("detection: {concept: {nope: 1}}", "detection.concept.nope"),
        ("detection: {sideways: {}}", "detection.sideways"),
        ("detection: {enabled: 1}", "detection.enabled"),
        ("detection: [1, 2]", "detection"),
        ("models: {m: {concept_drift: {adwin_delta: 5}}}", "models.m.concept_drift.adwin_delta"),
        ("metrics: {windows: []}", "metrics.windows"),
        ("web_port: 70000", "web_port"),
        ("surprise: 1", "surprise"),
    ],
)
def test_a_bad_value_fails_fast_naming_its_field(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    assert str(exc.value).startswith(names), str(exc.value)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    s = load(tmp_path, "web_port: 7000\n", DRIFTLINE_WEB_PORT="7100")
    assert s.web_port == 7100
    with pytest.raises(ConfigError, match="DRIFTLINE_PARTITIONS"):
        load(tmp_path, "{}\n", DRIFTLINE_PARTITIONS="many")
