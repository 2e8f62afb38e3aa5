"""Simulated model servers, instrumented with the SDK, and the incidents a scenario injects into them.

* :mod:`streams.sim.scenario`: the scenario file format (models, worker settings, incidents).
* :mod:`streams.sim.generator`: what each model sends, deterministic given the seed.
* :mod:`streams.sim.fleet`: the processes that send it through :class:`streams.sdk.DriftlineClient`.
* :mod:`streams.sim.harness`: a run's namespace, worker process and alert reader (demo and load test).

``driftline demo`` runs :data:`DEMO_SCENARIO`; ``loadtest/scenario.py`` runs any
scenario file and reports time-to-alert per incident.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.config import Settings
from streams.sim.scenario import (
    DEFAULT_CATEGORICAL,
    DEFAULT_NUMERIC,
    Incident,
    ModelSpec,
    NumericFeature,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
)

__all__ = [
    "DEMO_SCENARIO",
    "Incident",
    "ModelSpec",
    "Scenario",
    "ScenarioError",
    "legacy_scenario",
    "load_scenario",
    "parse_scenario",
    "run_fleet",
    "run_simulation",
]

#: The scenario ``driftline demo`` runs.
DEMO_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "demo.yaml"
FOREVER_S = 7 * 86_400.0


def legacy_scenario(models: int = 3, rate_per_s: float = 2000, duration_s: float = 60.0,
                    garbage_every_s: float = 0.0, seed: int = 7, drift_after_s: float = 90.0) -> Scenario:
    """The traffic ``driftline simulate`` sent before scenario files, as a scenario.

    ``models`` models named ``model-<i>`` share ``rate_per_s``; after
    ``drift_after_s`` (0: never) ``model-0`` drifts (``amount`` up one
    standard deviation, the country mix reversed) and its labels stop
    following its score; ``garbage_every_s`` adds five malformed records to
    ``model-0`` every so many seconds. ``duration_s`` 0 means until stopped.
    """
    if models < 1:
        raise ScenarioError(f"models: must be at least 1, got {models}")
    length_s = duration_s if duration_s > 0 else FOREVER_S
    numeric = (NumericFeature("amount", 50.0, 20.0, 0.5), *DEFAULT_NUMERIC[1:])
    specs = tuple(ModelSpec(name=f"model-{i}", rate_per_s=rate_per_s / models, numeric=numeric,
                            categorical=DEFAULT_CATEGORICAL, hosts=(f"model-{i}-srv-0",),
                            telemetry_interval_s=2.0)
                  for i in range(models))
    incidents: list[Incident] = []
    if 0 < drift_after_s < length_s:
        rest = length_s - drift_after_s
        incidents += [
            Incident("feature_drift_abrupt", "model-0", drift_after_s, rest,
                     {"feature": "amount", "shift_sd": 1.5, "categorical": "country", "mix": None}),
            Incident("concept_drift", "model-0", drift_after_s, rest, {"inverted_fraction": 0.5}),
        ]
    if garbage_every_s > 0:
        incidents.append(Incident("malformed_flood", "model-0", 0.0, length_s,
                                  {"records_per_s": 5.0 / garbage_every_s}))
    return Scenario(name="simulate", duration_s=length_s, models=specs, incidents=tuple(incidents),
                    seed=seed, processes=1)


def run_fleet(scenario: Scenario, bootstrap: str, topic_prefix: str, *, duration_s: float | None = None,
              forever: bool = False, on_tick: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run the scenario's fleet in the foreground until it ends, Ctrl-C or SIGTERM; returns SDK stats.

    ``on_tick(t0)`` is called about every 0.2 s while it runs (to print incidents as they start).
    """
    from streams.sim.fleet import Fleet

    fleet = Fleet(scenario, bootstrap, topic_prefix, duration_s=duration_s, forever=forever)
    stopping: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        t0 = fleet.start()
        while fleet.alive() and not stopping:
            if on_tick is not None:
                on_tick(t0)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stats = fleet.stop()
        signal.signal(signal.SIGTERM, previous)
    counts = fleet.counts()
    return {"predictions_sent": counts.predictions, "feedback_sent": counts.feedback,
            "telemetry_sent": counts.telemetry, "malformed_sent": counts.malformed,
            "failed_processes": fleet.failed(), "clients": stats}


def run_simulation(settings: Settings, models: int = 3, rate_per_s: int = 2000,
                   duration_s: float = 60.0, garbage_every_s: float = 0.0,
                   seed: int = 7, drift_after_s: float = 90.0) -> dict[str, Any]:
    """Send :func:`legacy_scenario` traffic until ``duration_s`` passes (0: until stopped).

    Returns the counts sent and the SDK statistics per model.
    """
    scenario = legacy_scenario(models, rate_per_s, duration_s, garbage_every_s, seed, drift_after_s)
    return run_fleet(scenario, settings.bootstrap, settings.topic_prefix, forever=duration_s <= 0)
