"""Every Grafana panel query returns data from a real Prometheus scraping a real worker under load.

A real Prometheus (Debian's binary) scrapes the worker started by the
fixtures every second, with ``deploy/prometheus/prometheus.yml``'s rule files
loaded. The load makes every panel have something to show: two models
(``fraud``, a classifier whose inputs drift and whose errors burst; ``reg``,
a regression model), labels, telemetry from a model server and garbage for
the dead-letter panels. Then every ``expr`` of every panel target of both
dashboards, with the template variables set to concrete values as Grafana
would set them, goes to Prometheus' HTTP API, and each must return a
non-empty result; so must every query variable (``label_values``).
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from streams.config import Settings
from tests.integration.conftest import WorkerProcess, free_port, producer
from tests.integration.peers import LocalPeer
from tests.integration.test_detection import (
    BASE_MS,
    BATCH,
    STABLE_BATCHES,
    make_records,
    publish_profile,
    send,
)
from tests.integration.test_ingest import wait_metric

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
JOB = "driftline-worker"
CONFIG = """
metrics:
  windows: ["1m"]
  idle_close: 1h
models:
  fraud: {task: classification}
  reg: {task: regression}
detection:
  data: {window_events: 2000, window: 0s, chunk_events: 250}
  ops: {silence_after: 4s}
"""
# fraud batches where 30% of requests fail: event time 140-180 s, in the newest window that closes
# (a 1m window closes 30 s of event time after its end; the last event is at 240 s)
ERROR_BURST = range(STABLE_BATCHES + 2, STABLE_BATCHES + 6)
QUERY_DEADLINE_S = 90.0
# Panels whose data must also show the load's story (above zero at some point of the test), and
# the label whose values must include these (None: any series above zero). Rates only of counters
# whose series exist before the load (a series born with the load has no earlier sample to rate
# against: Prometheus' usual blind spot for lazily created counters).
STORY: dict[str, tuple[str | None, set[str]]] = {
    "Driftline / Model / Throughput / A": ("model", {"fraud", "reg"}),
    "Driftline / Model / Error rate / A": ("model", {"fraud"}),
    "Driftline / Model / Accuracy / macro F1 / A": ("model", {"fraud"}),
    "Driftline / Model / Regression error (MAE / RMSE) / A": ("model", {"reg"}),
    "Driftline / Model / Drift score per feature / A": ("feature", {"amount", "country"}),
    "Driftline / Model / Driftline alert events / A": ("alertname", {"drift"}),
    "Driftline / Pipeline / Events/s in by kind / A": ("kind", {"prediction", "feedback", "telemetry"}),
    "Driftline / Pipeline / Dead-letter records/s by reason / A": (
        "reason", {"undecodable", "unknown_schema", "invalid_batch"}),
    "Driftline / Pipeline / Uptime / A": (None, set()),
}


PROMETHEUS_BIN = shutil.which("prometheus")


class Prometheus(LocalPeer):
    """A real Prometheus on 127.0.0.1 scraping one worker every second, with the project's rules."""

    name = "prometheus"

    def __init__(self, workdir: Path, worker_port: int) -> None:
        binary = PROMETHEUS_BIN
        if binary is None:
            pytest.skip("prometheus not installed (apt-get install prometheus, or make peers)")
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
        cfg["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
        cfg["rule_files"] = [str((PROMETHEUS_YML.parent / f).resolve()) for f in cfg["rule_files"]]
        cfg.pop("alerting", None)
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == JOB]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
        cfg["scrape_configs"] = [job]
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg))
        args = [f"--config.file={path}", f"--storage.tsdb.path={workdir / 'data'}"]
        super().__init__(binary, args, workdir, free_port())

    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def wait_scraped(self, job: str, timeout_s: float = 30) -> None:
        """Until the first scrape of ``job`` is in (target discovery takes a few seconds)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(r["value"][1] == "1" for r in self.query(f'up{{job="{job}"}}')):
                return
            time.sleep(0.3)
        raise AssertionError(f"prometheus never scraped {job}:\n{self.log.read_text()[-3000:]}")

    def query(self, expr: str) -> list[Any]:
        data = self.get("/api/v1/query", query=expr)
        return list(data["result"]) if data["resultType"] in ("vector", "matrix") else [data["result"]]


@pytest.fixture()
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(worker_port: int) -> Prometheus:
        p = Prometheus(tmp_path / "prometheus", worker_port)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


# -- what Grafana would send ------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Template variables as Grafana renders them (multi-value: a regex alternation)."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no test value for ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(one, expr)


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / refId, expr) of every target of every panel, rows' nested panels included."""
    out = []
    for p in dashboard["panels"]:
        for q in [p, *p.get("panels", [])]:
            for t in q.get("targets", []):
                out.append((f"{dashboard['title']} / {q['title']} / {t['refId']}", t["expr"]))
    return out


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, selector, label) of every ``label_values(selector, label)`` query variable."""
    out = []
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["definition"])
            assert m, v["definition"]
            out.append((f"{dashboard['title']} / ${v['name']}", m.group(1), m.group(2)))
    return out


def test_dashboards_are_valid_provisionable_grafana_json() -> None:
    assert {p.name for p in DASHBOARDS} == {"driftline-model.json", "driftline-pipeline.json"}
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert d["schemaVersion"] >= 36 and d["uid"] not in uids and d["title"]
        uids.add(d["uid"])
        names = [v["name"] for v in d["templating"]["list"]]
        assert names[0] == "datasource" and len(names) == len(set(names))
        ids = [p["id"] for p in d["panels"]] + [q["id"] for p in d["panels"] for q in p.get("panels", [])]
        assert len(ids) == len(set(ids)), path
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and p["description"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
            assert all(t["datasource"] == p["datasource"] and t["expr"].strip() for t in p["targets"])
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    model = json.loads((ROOT / "deploy/grafana/dashboards/driftline-model.json").read_text())
    assert {"model", "version"} <= {v["name"] for v in model["templating"]["list"]}


# -- load --------------------------------------------------------------------------------------


def regression_records(seed: int = 5) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``reg``: 2 400 predictions over 4 minutes of event time, every one labelled."""
    rng = np.random.default_rng(seed)
    preds, labels = [], []
    for b in range(12):
        n = 200
        ids = [f"r{b}-{j}" for j in range(n)]
        times = [BASE_MS + (b * n + j) * 100 for j in range(n)]
        yhat = np.round(rng.normal(50, 10, n), 3)
        preds.append({
            "schema": "driftline.prediction-columns/v1", "model": "reg", "model_version": "v1",
            "event_id": ids, "event_time_ms": times,
            "latency_ms": np.round(rng.lognormal(3.0, 0.5, n), 3).tolist(),
            "status": ["ok"] * n,
            "features": {"x": np.round(rng.normal(5, 2, n), 3).tolist(),
                         "c": [None if j % 9 == 0 else "abc"[j % 3] for j in range(n)]},
            "prediction": yhat.tolist(),
        })
        labels.append({
            "schema": "driftline.feedback-columns/v1", "model": "reg", "event_id": ids,
            "label": np.round(yhat + rng.normal(0, 3, n), 3).tolist(),
            "event_time_ms": [t + 2000 for t in times],
        })
    return preds, labels


def telemetry(n: int = 60) -> list[dict[str, Any]]:
    return [
        {"schema": "driftline.telemetry/v1", "host": "pod-1", "model": "fraud", "model_version": "v1",
         "event_time_ms": BASE_MS + i * 1000, "cpu_percent": 20.0 + (i % 7),
         "rss_bytes": 500_000_000 + i * 1000, "memory_percent": 12.5, "inflight_requests": i % 4}
        for i in range(n)
    ]


def send_load(s: Settings, worker: WorkerProcess) -> None:
    preds, labels = make_records()
    rng = np.random.default_rng(11)
    for b in ERROR_BURST:
        preds[b]["status"] = ["error" if x < 0.3 else "ok" for x in rng.random(BATCH)]
    reg_preds, reg_labels = regression_records()
    send(s, preds + reg_preds, "predictions")
    p = producer(s)
    p.produce(s.topic("telemetry"), key=b"fraud", value=orjson.dumps(telemetry()))
    garbage = [
        b"\x00 not an event",  # undecodable
        orjson.dumps({"schema": "driftline.prediction/v9", "model": "fraud"}),  # unknown schema
        orjson.dumps({**preds[0], "event_id": preds[0]["event_id"][:3]}),  # arrays of unequal length
    ]
    for g in garbage:
        p.produce(s.topic("predictions"), key=b"fraud", value=g)
    assert p.flush(30) == 0
    want = len(preds) * BATCH + len(reg_preds) * 200
    assert wait_metric(worker, "driftline_events_in_total", want, kind="prediction") >= want
    send(s, labels + reg_labels, "feedback")


# -- the test ----------------------------------------------------------------------------------


@pytest.mark.skipif(PROMETHEUS_BIN is None, reason="prometheus not installed (apt-get install prometheus, "
                    "or make peers)")
def test_every_dashboard_query_returns_data_from_prometheus_scraping_a_worker_under_load(
    settings: Settings, config_workers: Any, prometheus_factory: Any, tmp_path: Path
) -> None:
    publish_profile(settings, tmp_path)
    worker = config_workers(CONFIG)
    prom = prometheus_factory(settings.web_port)
    prom.wait_scraped(JOB)  # so the counters' rates see the load arrive
    send_load(settings, worker)

    values = {
        "job": JOB,
        "instance": f"127.0.0.1:{settings.web_port}",
        "model": "(fraud|reg)",  # both selected: Grafana renders a multi-value variable as a regex
        "version": "v1",
        "window": "1m",
        "__rate_interval": "1m",
        "__interval": "1s",
        "__range": "10m",
    }
    dashboards = [json.loads(p.read_text()) for p in DASHBOARDS]
    queries = [(name, substitute(expr, values)) for d in dashboards for name, expr in panel_queries(d)]
    variables = [(name, substitute(sel, values), label) for d in dashboards for name, sel, label in
                 variable_queries(d)]
    assert len(queries) >= 40, queries

    assert set(STORY) <= {name for name, _ in queries}

    def story_missing(name: str, q: str) -> str | None:
        label, want = STORY[name]
        got = {r["metric"].get(label or "", "") for r in prom.query(f"max_over_time(({q})[10m:1s]) > 0")}
        if (label is None and got) or (label is not None and want <= got):
            return None
        return f"above zero at some point for {label}={sorted(want)}, got {sorted(got)}"

    empty: list[tuple[str, str]] = []
    flat: list[tuple[str, str]] = []
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while True:
        empty = [(name, q) for name, q in queries if not prom.query(q)]
        empty += [(name, f"label_values({sel}, {label})") for name, sel, label in variables
                  if not prom.get(f"/api/v1/label/{label}/values", **{"match[]": sel})]
        flat = [(name, why) for name, q in queries if name in STORY and (why := story_missing(name, q))]
        if not (empty or flat) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not empty, "queries that returned no data:\n" + "\n".join(f"  {n}: {q}" for n, q in empty)
    assert not flat, "panels that never showed the load:\n" + "\n".join(f"  {n}: {w}" for n, w in flat)
    for name, q in queries:  # for the log (pytest -s): what each panel shows at the end
        print(f"{name}: {len(prom.query(q))} series")
