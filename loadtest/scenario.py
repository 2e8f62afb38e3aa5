"""Run a scenario end to end and report time-to-alert per incident, missed incidents and false alerts.

    .venv/bin/python loadtest/scenario.py loadtest/scenarios/all_incidents.yaml [--out DIR]

What it does: a broker (``DRIFTLINE_BOOTSTRAP_SERVERS`` if set, else a local
broker of its own in a throwaway directory, stopped at the end), fresh topics
and a fresh worker app id for the run, the worker's config (the scenario's
``worker:`` and ``rule_overrides:`` over the defaults) written to a file, one
``driftline worker`` subprocess, then the scenario's fleet
(:mod:`streams.sim.fleet`). While it runs it reads the alerts topic (own
consumer group, from the start) and samples every second: events produced
(the fleet's counters), events processed (the worker's ``/metrics``,
``driftline_events_in_total``), the worker group's consumer lag (committed
offsets against high watermarks), and the worker's CPU % and RSS (psutil).
Afterwards :mod:`loadtest.scenario_report` matches alerts to incidents.

Output: ``<out>/scenario-<name>.json`` (with the machine's facts), a table in
the terminal, and ``<out>/scenario-<name>.png`` drawn by
``loadtest/timeline.py`` (its inputs are also kept in
``scenario-<name>-timeline.json``). Exit code 1 when an incident was missed.

Timing is sensitive to load: on a 2-vCPU machine the broker, the worker, the
fleet and this process share two cores, so scenario files keep generous
``grace_s`` and the report states what was measured, not what was hoped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.common import machine
from loadtest.scenario_report import (
    Alert,
    Analysis,
    Sample,
    analyse,
    report_dict,
    timeline_inputs,
)
from streams.config import Settings, load_settings
from streams.sim.harness import (
    AlertReader,
    IncidentClock,
    ReceivedAlert,
    RunNamespace,
    WorkerProcess,
    delete_run_topics,
    free_port,
)
from streams.sim.scenario import Scenario, load_scenario

DEFAULT_OUT = Path(".driftline/scenarios")
INPUT_TOPICS = ("predictions", "feedback", "telemetry")


class LagProbe:
    """Consumer lag of the worker's group: committed offsets against high watermarks, summed.

    A consumer created with the worker's ``group.id`` but never subscribed
    does not join the group; it only asks the coordinator for the committed
    offsets, so probing does not disturb the worker.
    """

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": settings.app_id,
                                   "enable.auto.commit": False})
        self._parts = [TopicPartition(settings.topic(t), p) for t in INPUT_TOPICS
                       for p in range(settings.partitions)]

    def lag(self) -> int | None:
        try:
            committed = self._consumer.committed(self._parts, timeout=2)
            total = 0
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                total += max(0, high - (tp.offset if tp.offset >= 0 else low))
            return total
        except Exception:  # a slow coordinator or a rebalance: a gap in the series, not a failed run
            return None

    def close(self) -> None:
        self._consumer.close()


def processed_events(worker: WorkerProcess) -> float | None:
    """``driftline_events_in_total`` summed over kinds, from the worker's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = worker.metrics_text(timeout_s=2.0)
    except (OSError, urllib.error.URLError):
        return None
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "driftline_events_in_total":
                total += s.value
    return total


def ensure_broker(work_root: Path) -> tuple[str, Any]:
    """``DRIFTLINE_BOOTSTRAP_SERVERS`` if set; else a fresh local broker (returned, to be stopped)."""
    if os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS"):
        return os.environ["DRIFTLINE_BOOTSTRAP_SERVERS"], None
    from streams.broker.local import LocalBroker

    d = Settings()
    port = free_port()
    controller = free_port()
    while controller == port:
        controller = free_port()
    broker = LocalBroker(d.kafka_version, Path(d.kafka_cache_dir),
                         work_root / f"kafka-{uuid.uuid4().hex[:6]}", port=port, controller_port=controller,
                         heap="1g")
    return broker.up(), broker


def _say(console: Any, text: str) -> None:
    if console is not None:
        console.print(text, markup=False, highlight=False)


def _alert_line(got: ReceivedAlert, t0: float) -> str:
    e = got.event
    muted = " (muted)" if (e.get("evidence") or {}).get("muted_by") else ""
    summary = (e.get("annotations") or {}).get("summary", "")
    return (f"[{got.arrival - t0:6.1f}s] alert {e.get('status', '?').upper():8s} {e.get('signal', '?')} "
            f"{e.get('model', '?')}{muted}: {summary}")


def run_scenario(scenario: Scenario, *, bootstrap: str, out_dir: Path, keep_topics: bool = False,
                 timeline: bool = True, drain_s: float = 5.0, max_drain_s: float = 180.0,
                 console: Any = None) -> dict[str, Any]:
    """Run ``scenario`` against ``bootstrap`` and return the report (also written to ``out_dir``).

    After the fleet stops, alerts are read for ``drain_s`` more, and longer while the worker is
    still behind (up to ``max_drain_s``): an alert that comes late because the worker lagged is a
    late detection, not a miss. It stops as soon as the worker has caught up, before its silence
    detector could take the end of the traffic for silent servers.
    """
    import psutil

    from streams.broker.admin import create_topics
    from streams.sim.fleet import Fleet

    out_dir.mkdir(parents=True, exist_ok=True)
    base = load_settings(env={}, bootstrap_servers=bootstrap)
    label = "sc-" + scenario.name.replace(":", "-").replace("_", "-")[:40]
    ns = RunNamespace.create(base, scenario, out_dir / "work", label, web_port=free_port())
    s = ns.settings
    create_topics(s)
    _say(console, f"[scenario] {scenario.name}: {len(scenario.models)} models, {len(scenario.incidents)} "
                  f"incidents, {scenario.duration_s:g} s; topics {s.topic_prefix}*, worker log "
                  f"{ns.work_dir / 'worker.log'}")
    worker = WorkerProcess(ns, log=ns.work_dir / "worker.log")
    fleet: Fleet | None = None
    reader: AlertReader | None = None
    probe: LagProbe | None = None
    samples: list[Sample] = []
    t0 = time.time()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    worker_exit: int | None = None
    try:
        worker.wait_ready()
        proc = psutil.Process(worker.pid)
        proc.cpu_percent(None)
        probe = LagProbe(s)
        fleet = Fleet(scenario, s.bootstrap, s.topic_prefix)
        t0 = fleet.start()
        clock = IncidentClock(scenario.incidents, t0)
        reader = AlertReader(s, on_alert=lambda got: _say(console, _alert_line(got, t0)))
        end = t0 + scenario.duration_s
        next_sample = t0 + 1.0
        next_progress = t0 + 30.0
        while True:
            for what, inc in clock.due(time.time()):
                verb = "injecting" if what == "start" else "ended"
                _say(console, f"[{time.time() - t0:6.1f}s] {verb} {inc.kind} on {inc.model}")
            now = time.time()
            if now < next_sample:
                time.sleep(min(0.2, next_sample - now))
                continue
            next_sample += 1.0
            if worker.proc.poll() is not None:
                _say(console, f"[scenario] the worker exited with {worker.proc.returncode}")
                break
            try:
                cpu, rss = proc.cpu_percent(None), proc.memory_info().rss
            except psutil.Error:
                cpu, rss = None, None
            samples.append(Sample(now - t0, fleet.counts().events, processed_events(worker), probe.lag(),
                                  cpu, rss, os.getloadavg()[0]))
            if now >= next_progress:
                next_progress += 30.0
                last = samples[-1]
                _say(console, f"[{now - t0:6.1f}s] produced {last.produced_events:,} processed "
                              f"{(last.processed_events or 0):,.0f} lag {last.lag_records} records cpu "
                              f"{(last.cpu_percent or 0):.0f}% load {last.load_1m or 0:.1f} "
                              f"alerts {len(reader.snapshot())}")
            if now >= end + drain_s and (samples[-1].lag_records == 0 or now >= end + max_drain_s):
                break
    finally:
        if fleet is not None:
            fleet.stop()
        if reader is not None:
            reader.close()
        if probe is not None:
            probe.close()
        worker_exit = worker.stop()
    received = reader.snapshot() if reader is not None else []
    alerts = [Alert.from_event(a.event, a.arrival, t0) for a in received]
    analysis = analyse(scenario.incidents, alerts, scenario.grace_s)
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "started": started,
        "duration_s": scenario.duration_s,
        "observed_s": round(samples[-1].t_s, 1) if samples else 0.0,
        "grace_s": scenario.grace_s,
        "seed": scenario.seed,
        "machine": machine(),
        "bootstrap": s.bootstrap,
        "topic_prefix": s.topic_prefix,
        "app_id": s.app_id,
        "worker_config": scenario.worker_config(),
        "worker_exit_code": worker_exit,
        "fleet": {"processes": len(fleet.groups) if fleet else 0,
                  "failed_processes": fleet.failed() if fleet else [],
                  "counts": _counts(fleet), "sdk": fleet.stats if fleet else {}},
        **report_dict(analysis, samples, run_s=scenario.duration_s),
        "alerts": [{"status": a.status, **a.brief()} for a in sorted(alerts, key=lambda a: a.arrival_s)],
    }
    path = out_dir / f"scenario-{scenario.name}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    report["json_path"] = str(path)
    report["timeline_png"] = _timeline(out_dir, scenario, analysis, samples) if timeline else None
    path.write_text(json.dumps(report, indent=2, default=str))
    if not keep_topics:
        try:
            delete_run_topics(s)
        except Exception as exc:  # the report is written; a broker that refuses deletion is no failure
            _say(console, f"[scenario] could not delete the run's topics: {exc}")
    return report


def reanalyse(scenario: Scenario, path: Path, timeline: bool = True) -> dict[str, Any]:
    """Match the alerts and samples kept in an earlier report again (after changing the matching
    rules, say) without running the scenario again; rewrites the report and its timeline."""
    report: dict[str, Any] = json.loads(path.read_text())
    alerts = [Alert(arrival_s=a["arrival_s"], status=a["status"], rule=a["rule"], model=a["model"],
                    fingerprint=a["fingerprint"], starts_at_s=a["starts_at_s"],
                    labels={"alertname": a["rule"], "model": a["model"], **a["labels"]},
                    muted_by=tuple(a.get("muted_by", ())), summary=a["summary"], severity=a["severity"])
              for a in report["alerts"]]
    samples = [Sample(s["t_s"], s["produced_events"], s["processed_events"], s.get("lag_records"),
                      s["cpu_percent"], s["rss_bytes"], s.get("load_1m")) for s in report["samples"]]
    analysis = analyse(scenario.incidents, alerts, scenario.grace_s)
    report.update(report_dict(analysis, samples, run_s=scenario.duration_s))
    report["json_path"] = str(path)
    report["timeline_png"] = _timeline(path.parent, scenario, analysis, samples) if timeline else None
    path.write_text(json.dumps(report, indent=2, default=str))
    return report


def _counts(fleet: Any) -> dict[str, int]:
    if fleet is None:
        return {}
    c = fleet.counts()
    return {"predictions": c.predictions, "feedback": c.feedback, "telemetry": c.telemetry,
            "malformed": c.malformed}


def _timeline(out_dir: Path, scenario: Scenario, analysis: Analysis, samples: list[Sample]) -> str | None:
    series, spans, markers = timeline_inputs(analysis, samples)
    data = out_dir / f"scenario-{scenario.name}-timeline.json"
    data.write_text(json.dumps({"title": f"scenario {scenario.name}", "series": series, "spans": spans,
                                "markers": markers}, indent=1))
    try:
        from loadtest.timeline import render_timeline
    except ImportError:
        return None
    png = render_timeline(out_dir / f"scenario-{scenario.name}.png", f"scenario {scenario.name}",
                          series, spans, markers)
    return str(png)


def print_report(report: dict[str, Any], console: Any) -> None:
    """The incident table, the false alerts and the throughput summary, with rich."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"scenario {report['scenario']}: time to alert", title_justify="left")
    columns = ("incident", "model", "start s", "end s", "time to alert s", "alert", "resolved s",
               "side effects")
    for col in columns:
        t.add_column(col, justify="right" if col.endswith(" s") else "left")
    for r in report["incidents"]:
        tta = "[bold red]MISSED[/]" if not r["detected"] else f"{r['time_to_alert_s']:.1f}"
        alert = r["alert"]["rule"] if r["alert"] else "-"
        extra = len(r["also_detected_by"])
        if extra:
            alert += f" (+{extra})"
        effects = ", ".join(sorted({a["rule"] for a in r["side_effects"]})) or "-"
        resolved = "-" if r["resolved_s"] is None else f"{r['resolved_s']:.0f}"
        t.add_row(r["kind"], r["model"], f"{r['at_s']:g}", f"{r['at_s'] + r['duration_s']:g}", tta, alert,
                  resolved, effects)
    console.print(t)
    f = Table(title=f"false alerts: {report['false_alert_count']}", title_justify="left")
    for col in ("at s", "rule", "model", "labels", "summary"):
        f.add_column(col, justify="right" if col == "at s" else "left")
    for a in report["false_alerts"]:
        labels = " ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()))
        f.add_row(f"{a['arrival_s']:.1f}", a["rule"], a["model"], escape(labels), escape(a["summary"][:100]))
    console.print(f)
    s = report["summary"]

    def num(v: Any, fmt: str = ",.0f") -> str:
        return "-" if v is None else format(v, fmt)

    counts = report["alert_counts"]
    lag, cpu, rss = s["lag_records"], s["worker_cpu_percent"], s["worker_rss_mib"]
    backlog = s["backlog_events"]
    console.print(
        f"alerts: {counts['firing']} firing ({report['muted_alert_count']} muted), "
        f"{counts['resolved']} resolved, {counts['repeats']} repeats\n"
        f"events/s produced {num(s.get('produced_events_per_s'))} "
        f"(peak {num(s.get('produced_events_per_s_peak'))}), "
        f"processed {num(s.get('processed_events_per_s'))} "
        f"(peak {num(s.get('processed_events_per_s_peak'))}); "
        f"events produced {num(s.get('events_produced'))}, processed {num(s.get('events_processed'))}\n"
        f"consumer lag (records): mean {num(lag['mean'])}, max {num(lag['max'])}, final {num(lag['final'])}; "
        f"backlog (events): mean {num(backlog['mean'])}, max {num(backlog['max'])}\n"
        f"worker CPU %: mean {num(cpu['mean'])}, max {num(cpu['max'])}; "
        f"RSS MiB: mean {num(rss['mean'])}, max {num(rss['max'])}; machine load average (1 min): "
        f"mean {num(s['load_1m']['mean'], '.1f')}, max {num(s['load_1m']['max'], '.1f')}",
        highlight=False,
    )
    console.print(f"results: {report['json_path']}" + (f", timeline {report['timeline_png']}"
                                                        if report.get("timeline_png") else ""),
                  markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", type=Path, help="a scenario YAML file (loadtest/scenarios/*.yaml)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"results directory (default {DEFAULT_OUT})")
    ap.add_argument("--keep-topics", action="store_true", help="do not delete the run's topics afterwards")
    ap.add_argument("--no-timeline", action="store_true", help="skip the timeline picture")
    ap.add_argument("--max-drain-s", type=float, default=180.0,
                    help="after the traffic, wait up to this long for the worker to catch up (default 180)")
    ap.add_argument("--reanalyse", type=Path, metavar="REPORT",
                    help="match the alerts of an earlier report (its JSON) again instead of running")
    args = ap.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    scenario = load_scenario(args.scenario)
    if args.reanalyse:
        report = reanalyse(scenario, args.reanalyse, timeline=not args.no_timeline)
        print_report(report, console)
        return 0 if report["ok"] else 1
    bootstrap, broker = ensure_broker(args.out / "work")
    try:
        report = run_scenario(scenario, bootstrap=bootstrap, out_dir=args.out, keep_topics=args.keep_topics,
                              timeline=not args.no_timeline, max_drain_s=args.max_drain_s, console=console)
    finally:
        if broker is not None:
            broker.down()
            shutil.rmtree(broker.data_dir, ignore_errors=True)
    print_report(report, console)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
