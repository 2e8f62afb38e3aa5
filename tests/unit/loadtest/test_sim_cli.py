"""``driftline demo`` and ``driftline simulate``: their options, and scenario errors reported as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli import build_parser, main


def test_demo_keeps_duration_and_rate_and_takes_a_scenario() -> None:
    args = build_parser().parse_args(["demo", "--duration", "60", "--rate", "5000"])
    assert (args.duration, args.rate, args.scenario) == (60.0, 5000.0, None)
    assert (args.live, args.keep_topics) == (10.0, False)
    args = build_parser().parse_args(["demo", "--scenario", "x.yaml", "--seed", "3", "--live", "0"])
    assert (args.scenario, args.seed, args.live, args.duration) == ("x.yaml", 3, 0.0, None)


def test_simulate_keeps_the_classic_options() -> None:
    args = build_parser().parse_args(["simulate", "--models", "2", "--rate", "100", "--duration", "5",
                                      "--garbage-every", "5", "--drift-after", "0"])
    assert (args.models, args.rate, args.duration) == (2, 100.0, 5.0)
    assert (args.garbage_every, args.drift_after) == (5.0, 0.0)
    assert build_parser().parse_args(["simulate"]).scenario is None


@pytest.mark.parametrize("command", ["demo", "simulate"])
def test_a_bad_scenario_file_is_a_clean_error(command: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("duration_s: 10\nmodels: [{name: a}]\nincidents: [{kind: nope, model: a, at_s: 1, "
                   "duration_s: 1}]\n")
    assert main([command, "--scenario", str(bad)]) == 2
    assert "incidents[0].kind: must be one of" in capsys.readouterr().err
