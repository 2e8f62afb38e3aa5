"""Crash consistency of the metrics engine, checked against the run that never stopped.

The worker reads predictions and feedback from two topics; after a crash it
restores what reached the changelog (any prefix of the last flush, in the
order :meth:`MetricsEngine.take_writes` gives) and replays each topic from
its committed offset, in an order across the two topics that need not be the
first run's. Every seed draws one such history: interleaving, flush points,
crash point, how much of that flush survived, and the replay's interleaving.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from streams.core.batches import FeedbackBatch
from streams.core.engine import MetricsEngine
from streams.core.metrics_config import EngineConfig
from streams.core.windows import WindowSpec
from tests.same import assert_same
from tests.unit.core.test_engine import T0, _config, preds, snaps_by_key

Records = dict[str, list[Any]]
TOPICS = ("predictions:0", "feedback:0")
FLUSH_P = 0.1  # chance of a flush (and a commit) after a record


def _records() -> Records:
    """Four minutes of one model's traffic: labels for 80 % of events, some before their predictions."""
    rng = np.random.default_rng(5)
    p: list[Any] = []
    rows: list[tuple[str, int, int]] = []
    for k in range(16):
        ids = [f"e{k * 30 + i}" for i in range(30)]
        times = [T0 + 15_000 * k + 500 * i for i in range(30)]
        scores = [float(v) for v in rng.random(30)]
        p.append(preds(ids, times, preds_=scores, segment=["eu" if i % 3 else "us" for i in range(30)],
                       request_id=[f"r{k}-{i}" for i in range(30)]))
        rows += [(e, t, int(rng.random() < s)) for e, t, s in zip(ids, times, scores, strict=True)]
    labelled = [r for i, r in enumerate(rows) if i % 5]
    fb = [
        FeedbackBatch("m", [e for e, _, _ in chunk], [y for _, _, y in chunk],
                      np.asarray([t + 20_000 for _, t, _ in chunk], dtype=np.int64))
        for chunk in (labelled[i : i + 37] for i in range(0, len(labelled), 37))
    ]
    return {"predictions:0": p, "feedback:0": fb}


RECORDS = _records()


# The second also has a long tumbling window (4m): its panes are folded into an accumulator
# once the shorter windows closed over them (streams.core.series.Accumulator).
CONFIGS = {
    "1m+2m/1m": _config(),
    "1m+2m/1m+4m": replace(_config(), windows=(*_config().windows, WindowSpec.parse("4m"))),
}


def _feed(eng: MetricsEngine, topic: str, offset: int) -> None:
    batch = RECORDS[topic][offset]
    if topic == "predictions:0":
        eng.on_predictions(batch, topic, offset, now_ms=0)
    else:
        eng.on_feedback(batch, topic, offset, now_ms=0)
    eng.advance(now_ms=0)


def _interleave(rng: random.Random, start: dict[str, int]) -> list[tuple[str, int]]:
    """Each topic in its own order from ``start``; across topics, any order."""
    order = [t for t in TOPICS for _ in range(start[t], len(RECORDS[t]))]
    rng.shuffle(order)
    nxt = dict(start)
    out = []
    for t in order:
        out.append((t, nxt[t]))
        nxt[t] += 1
    return out


def _final(eng: MetricsEngine) -> list[dict[str, Any]]:
    eng.advance(now_ms=10**9)
    return eng.take_snapshots()


def test_the_reference_history_labels_windows() -> None:
    eng = MetricsEngine(_config(), 0)
    for topic, off in _interleave(random.Random(0), dict.fromkeys(TOPICS, 0)):
        _feed(eng, topic, off)
    got = snaps_by_key(_final(eng))
    overall = [s for k, s in got.items() if k[0] == "v1" and k[1] is None and k[2] == "1m"]
    assert len(overall) == 4 and all(s["labels"]["labelled"] > 0 for s in overall)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", range(60))
def test_any_crash_and_replay_order_give_the_snapshots_of_the_run_that_never_stopped(
    seed: int, config: str
) -> None:
    cfg: EngineConfig = CONFIGS[config]
    rng = random.Random(seed)
    ref = MetricsEngine(cfg, 0)
    for topic, off in _interleave(random.Random(10_000 + seed), dict.fromkeys(TOPICS, 0)):
        _feed(ref, topic, off)
    want = snaps_by_key(_final(ref))

    eng = MetricsEngine(cfg, 0)
    log: list[tuple[bytes, bytes | None]] = []
    flushes: list[tuple[int, int, dict[str, int]]] = []  # (first write, end, offsets read by then)
    snaps: list[dict[str, Any]] = []
    pos = dict.fromkeys(TOPICS, 0)
    history = _interleave(rng, pos)
    for i, (topic, off) in enumerate(history):
        _feed(eng, topic, off)
        pos[topic] = off + 1
        snaps.extend(eng.take_snapshots())
        if rng.random() < FLUSH_P or i == len(history) - 1:
            writes = eng.take_writes()
            flushes.append((len(log), len(log) + len(writes), dict(pos)))
            log.extend(writes)
            eng.committed(pos)  # the commit after the flush: later flushes prune guards below it
    # The crash: flush f reached the changelog up to write j; offsets were committed after flush f-1.
    f = rng.randrange(len(flushes))
    first, end, _ = flushes[f]
    kept = rng.randint(first, end)
    committed = flushes[f - 1][2] if f else dict.fromkeys(TOPICS, 0)
    table: dict[bytes, bytes] = {}
    for k, v in log[:kept]:
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v
    restarted = MetricsEngine(cfg, 0)
    restarted.restore(table.items(), now_ms=0)
    for topic, off in _interleave(rng, committed):
        _feed(restarted, topic, off)
    snaps.extend(restarted.take_snapshots())
    got = snaps_by_key(snaps + _final(restarted))
    assert got.keys() == want.keys()
    for key in want:
        # Floats to 1e-12: labels added in another order may change a sum's last bit.
        assert_same(got[key], want[key], f"{key} crash in flush {f} at write {kept - first}", rel=1e-12)


@pytest.mark.parametrize("commits", [True, False])
def test_committed_offsets_keep_the_label_guards_of_a_busy_pane_small(commits: bool) -> None:
    """200 prediction records in one minute, each labelled by the next feedback record."""
    eng = MetricsEngine(_config(), 0)
    most = 0
    for k in range(200):
        ids = [f"e{k}-{i}" for i in range(10)]
        eng.on_predictions(preds(ids, [T0 + 250 * k + i for i in range(10)]), "predictions:0", k, now_ms=0)
        eng.on_feedback(FeedbackBatch("m", ids, [1] * 10, np.full(10, T0 + 250 * k + 20, dtype=np.int64)),
                        "feedback:0", k, now_ms=0)
        eng.take_writes()
        if commits:
            eng.committed({"predictions:0": k + 1, "feedback:0": k + 1})
        pane = eng.models["m"].series[("m", "v1", "")].panes[T0]
        most = max(most, sum(len(seen) for seen in pane.label_pairs.values()))
    assert pane.labelled == 2_000
    assert most <= 3 if commits else most == 200
