"""What one simulated model serves, as a pure function of the seed, the event index and the schedule.

The fleet asks for "events ``start`` to ``stop`` of this model"; event ``i``
is due at ``i / rate_per_s`` seconds after the start, and everything about it
(features, score, latency, status, label, label delay, version) comes from
random draws made in fixed blocks of :data:`BLOCK` events, each block from its
own generator seeded with ``(seed, model, block)``. So the stream does not
depend on how a busy machine happened to chunk the ticks: a rerun with the
same seed sends the same events, and a run that falls behind catches up on
the same events rather than different ones. Incidents then transform those
draws according to each event's scheduled time; the draws themselves never
change, so an incident alters exactly what it is meant to and nothing else.

Telemetry samples are likewise a function of ``(seed, model, host, sample
number)``. GPUs are simulated (there is none here) in the shape the SDK's
NVML probe reports (:class:`streams.sdk.gpu.GpuSample`).

The simulated model is a binary classifier: its score is a weighted sum of
the standardised numeric features, ``p(yes) = 1 / (1 + exp(-4 * score))``,
and the true label is drawn with that probability, so the model is right
about 87 % of the time (with the default weights), comfortably above the
default ``accuracy_low`` rule's 0.8. Concept drift draws labels against the score
instead (``1 - p``): the inputs and outputs look the same, only the labels
show that the model no longer fits.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.sdk.gpu import GpuSample
from streams.sim.scenario import CategoricalFeature, Incident, ModelSpec

__all__ = [
    "BLOCK",
    "MALFORMED",
    "ModelGenerator",
    "Predictions",
    "expected_accuracy",
    "malformed_record",
    "model_key",
]

BLOCK = 256
MIB = 2**20
HOST_MEMORY_BYTES = 16 * 2**30  # for memory_percent
GPU_MEMORY_BYTES = 16 * 2**30
LATENCY_SIGMA = 0.35  # log-normal spread of latency: p99 is about 2.3x the median
SLOPE = 4.0  # p(yes) = sigmoid(SLOPE * score)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def model_key(name: str) -> int:
    """A stable 32-bit number for a model name (Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode())


@dataclass(frozen=True, slots=True)
class Predictions:
    """Consecutive events ``index`` of one model, column by column."""

    index: IntArray
    t_s: FloatArray  # when each is due, seconds since the start
    version: list[str]
    features: dict[str, list[Any]]
    p_yes: FloatArray
    latency_ms: FloatArray
    error: BoolArray
    labelled: BoolArray
    label_yes: BoolArray
    label_delay_s: FloatArray

    def __len__(self) -> int:
        return len(self.index)


def _intensity(inc: Incident, t_s: FloatArray) -> FloatArray:
    """0 outside the incident; inside, 1 (abrupt) or the fraction of the incident elapsed (gradual)."""
    inside = (t_s >= inc.at_s) & (t_s < inc.end_s)
    if inc.kind == "feature_drift_gradual":
        return np.where(inside, (t_s - inc.at_s) / inc.duration_s, 0.0)
    return inside.astype(np.float64)


def _drifted_shares(feature: CategoricalFeature, mix: dict[str, float] | None) -> tuple[
        tuple[str, ...], FloatArray, FloatArray]:
    """Values (the feature's, then any new ones of ``mix``) and the base and drifted shares over them.

    Without ``mix`` the shares are reversed: the rarest value becomes the most common.
    """
    if mix is None:
        mix = dict(zip(feature.values, reversed(feature.weights), strict=True))
    values = feature.values + tuple(v for v in mix if v not in feature.values)
    base = np.array([*feature.weights, *([0.0] * (len(values) - len(feature.values)))])
    drifted = np.array([mix.get(v, 0.0) for v in values])
    return values, base, drifted


class ModelGenerator:
    """Events and telemetry of one simulated model (see the module docstring)."""

    def __init__(self, spec: ModelSpec, incidents: Sequence[Incident], seed: int) -> None:
        self.spec = spec
        self.incidents = tuple(i for i in incidents if i.model == spec.name)
        self.seed = seed
        self.key = model_key(spec.name)
        self._cache: dict[int, dict[str, FloatArray]] = {}
        weights = np.array([w for _, w in spec.versions])
        self._version_cdf = np.cumsum(weights / weights.sum())
        self._versions = [v for v, _ in spec.versions]

    # -- schedule ---------------------------------------------------------------------------------

    def _active(self, kind: str, t_s: float) -> list[Incident]:
        return [i for i in self.incidents if i.kind == kind and i.active(t_s)]

    def silenced(self, t_s: float) -> bool:
        """Whether the model sends no predictions at ``t_s``."""
        return bool(self._active("silence", t_s))

    def telemetry_silenced(self, t_s: float) -> bool:
        return any(i.params["telemetry"] for i in self._active("silence", t_s))

    def malformed_per_s(self, t_s: float) -> float:
        return float(sum(i.params["records_per_s"] for i in self._active("malformed_flood", t_s)))

    # -- predictions ------------------------------------------------------------------------------

    def _block(self, b: int) -> dict[str, FloatArray]:
        got = self._cache.get(b)
        if got is not None:
            return got
        rng = np.random.default_rng([self.seed, self.key, b])
        n_num, n_cat = len(self.spec.numeric), len(self.spec.categorical)
        got = {
            "z": rng.standard_normal((BLOCK, n_num)),
            "u_cat": rng.random((BLOCK, n_cat)),
            "u_label": rng.random(BLOCK),
            "u_labelled": rng.random(BLOCK),
            "u_delay": rng.random(BLOCK),
            "z_latency": rng.standard_normal(BLOCK),
            "u_error": rng.random(BLOCK),
            "u_version": rng.random(BLOCK),
            "u_invert": rng.random(BLOCK),
        }
        if len(self._cache) >= 4:  # consecutive requests touch one or two blocks
            self._cache.pop(min(self._cache))
        self._cache[b] = got
        return got

    def _draws(self, start: int, stop: int) -> dict[str, FloatArray]:
        parts: list[dict[str, FloatArray]] = []
        for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
            lo, hi = max(start, b * BLOCK) - b * BLOCK, min(stop, (b + 1) * BLOCK) - b * BLOCK
            parts.append({k: v[lo:hi] for k, v in self._block(b).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def predictions(self, start: int, stop: int) -> Predictions:
        """Events ``start`` (inclusive) to ``stop`` (exclusive) of this model."""
        if not 0 <= start < stop:
            raise ValueError(f"need 0 <= start < stop, got {start}, {stop}")
        spec = self.spec
        d = self._draws(start, stop)
        n = stop - start
        index = np.arange(start, stop, dtype=np.int64)
        t = index / spec.rate_per_s
        features: dict[str, list[Any]] = {}
        score = np.zeros(n)
        for k, f in enumerate(spec.numeric):
            shift = np.zeros(n)
            for inc in self.incidents:
                if inc.kind.startswith("feature_drift") and inc.params["feature"] == f.name:
                    shift += inc.params["shift_sd"] * _intensity(inc, t)
            z = d["z"][:, k] + shift
            score += f.weight * z
            features[f.name] = np.round(f.mean + f.std * z, 4).tolist()
        for k, c in enumerate(spec.categorical):
            features[c.name] = self._categories(c, d["u_cat"][:, k], t)
        p_yes = 1.0 / (1.0 + np.exp(-SLOPE * score))
        label_p = p_yes.copy()
        for inc in self.incidents:
            if inc.kind == "concept_drift":
                inverted = (_intensity(inc, t) > 0) & (d["u_invert"] < inc.params["inverted_fraction"])
                label_p = np.where(inverted, 1.0 - p_yes, label_p)
        factor = np.ones(n)
        error_rate = np.full(n, spec.error_rate)
        for inc in self.incidents:
            if inc.kind == "latency_spike":
                factor = np.where(_intensity(inc, t) > 0, factor * inc.params["factor"], factor)
            elif inc.kind == "error_burst":
                error_rate = np.where(_intensity(inc, t) > 0, inc.params["error_rate"], error_rate)
        latency = spec.latency_ms * np.exp(LATENCY_SIGMA * d["z_latency"]) * factor
        error = d["u_error"] < error_rate
        lo, hi = spec.label_delay_s
        vidx = np.minimum(np.searchsorted(self._version_cdf, d["u_version"], side="right"),
                          len(self._versions) - 1)
        return Predictions(
            index=index,
            t_s=t,
            version=[self._versions[i] for i in vidx.tolist()],
            features=features,
            p_yes=p_yes,
            latency_ms=np.round(latency, 3),
            error=error,
            labelled=(d["u_labelled"] < spec.label_fraction) & ~error,
            label_yes=d["u_label"] < label_p,
            label_delay_s=lo + (hi - lo) * d["u_delay"],
        )

    def _categories(self, c: CategoricalFeature, u: FloatArray, t: FloatArray) -> list[str]:
        drifts = [i for i in self.incidents
                  if i.kind.startswith("feature_drift") and i.params["categorical"] == c.name]
        if not drifts:
            idx = np.searchsorted(np.cumsum(c.weights), u, side="right")
            return [c.values[i] for i in np.minimum(idx, len(c.values) - 1).tolist()]
        inc = drifts[0]  # one drift per feature at a time is what a scenario can tell apart anyway
        values, base, drifted = _drifted_shares(c, inc.params["mix"])
        w = _intensity(inc, t)[:, None]
        cdf = np.cumsum((1.0 - w) * base + w * drifted, axis=1)
        idx = np.minimum((u[:, None] >= cdf).sum(axis=1), len(values) - 1)
        return [values[i] for i in idx.tolist()]

    # -- telemetry --------------------------------------------------------------------------------

    def telemetry(self, host_index: int, sample: int) -> dict[str, Any]:
        """Sample number ``sample`` of host ``host_index`` (due at ``sample * telemetry_interval_s``):
        the ``driftline.telemetry/v1`` fields except ``model``, ``model_version`` and ``event_time_ms``."""
        spec = self.spec
        host = spec.hosts[host_index]
        t = sample * spec.telemetry_interval_s
        rng = np.random.default_rng([self.seed, self.key, 1 + host_index, sample])
        z = rng.standard_normal(8)
        rss = spec.rss_mib * MIB + 4 * MIB * float(z[0])
        for inc in self._active("memory_leak", t):
            if inc.params["hosts"] is None or host in inc.params["hosts"]:
                rss += inc.params["mib_per_min"] * MIB * (t - inc.at_s) / 60.0
        rss = max(rss, MIB)
        latency_s = spec.latency_ms / 1000.0
        out: dict[str, Any] = {
            "host": host,
            "cpu_percent": max(0.0, float(spec.cpu_percent + 3.0 * z[1])),
            "rss_bytes": int(rss),
            "memory_percent": min(100.0, float(100.0 * rss / HOST_MEMORY_BYTES)),
            "inflight_requests": int(rng.poisson(max(spec.rate_per_s * latency_s / len(spec.hosts), 0.1))),
        }
        if spec.gpus:
            saturated = [i for i in self._active("gpu_saturation", t)
                         if i.params["hosts"] is None or host in i.params["hosts"]]
            out["gpus"] = [self._gpu(g, float(z[2 + (g % 6)]), saturated[0] if saturated else None)
                           for g in range(spec.gpus)]
        return out

    @staticmethod
    def _gpu(index: int, z: float, saturated: Incident | None) -> GpuSample:
        if saturated is None:
            util, mem_frac, temp, power = 45.0 + 5.0 * z, 0.45 + 0.02 * z, 60.0 + 2.0 * z, 150.0 + 10.0 * z
        else:
            util = saturated.params["utilization_percent"] + 0.5 * abs(z)
            mem_frac = saturated.params["memory_fraction"]
            temp, power = 84.0 + abs(z), 290.0 + 5.0 * z
        return GpuSample(
            index=index,
            utilization_percent=min(100.0, max(0.0, util)),
            memory_used_bytes=int(min(1.0, max(0.0, mem_frac)) * GPU_MEMORY_BYTES),
            memory_total_bytes=GPU_MEMORY_BYTES,
            temperature_c=temp,
            power_w=max(0.0, power),
        )


#: What a broken producer sends, cycled through by the malformed flood: undecodable bytes, JSON cut
#: short, an unknown schema, an event that breaks its contract, an empty record, a column batch whose
#: arrays differ in length. ``{model}`` is the flooded model.
MALFORMED: tuple[str, ...] = (
    "\xff\xfe not json",
    '{"schema": "driftline.prediction/v1", "event_id": "x", "model": "{model}"',
    '{"schema": "driftline.prediction/v9", "event_id": "x", "model": "{model}"}',
    '{"schema": "driftline.prediction/v1", "event_id": "x{n}", "model": "{model}", "model_version": "v1", '
    '"event_time_ms": 1, "latency_ms": "fast", "status": "ok"}',
    "",
    '{"schema": "driftline.prediction-columns/v1", "model": "{model}", "model_version": "v1", '
    '"event_id": ["a{n}", "b{n}"], "event_time_ms": [1], "latency_ms": [1.0, 2.0], "status": ["ok", "ok"]}',
)


def malformed_record(model: str, n: int) -> bytes:
    """The ``n``-th malformed record of a flood on ``model`` (deterministic)."""
    text = MALFORMED[n % len(MALFORMED)].replace("{model}", model).replace("{n}", str(n))
    return text.encode("latin-1") if n % len(MALFORMED) == 0 else text.encode()


def expected_accuracy(spec: ModelSpec) -> float:
    """About how often the simulated model is right without concept drift (for documentation and tests)."""
    sd = math.sqrt(sum(f.weight**2 for f in spec.numeric))
    if sd == 0:
        return 0.5
    z = np.random.default_rng(0).standard_normal(100_000) * sd
    p = 1.0 / (1.0 + np.exp(-SLOPE * z))
    return float(np.mean(np.maximum(p, 1.0 - p)))
