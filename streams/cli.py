"""``driftline``: the command line.

    driftline kafka up|down|status     the embedded local broker
    driftline topics create|list       apply streams/topics.py to the cluster
    driftline worker [--live]          run a stream worker
    driftline simulate                 simulated model servers (SDK): a scenario file or classic traffic
    driftline demo                     broker + worker + simulated servers + incidents, alerts as they arrive
    driftline profile build|publish|show   reference profiles for drift detection
    driftline notify                   deliver alert events to receivers (webhook, Slack, email, Alertmanager)
    driftline silence add|list|expire  silence alerts by label matchers (control topic)
    driftline deploy topics            Strimzi KafkaTopic manifests from streams/topics.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

# One BLAS thread: a worker is one process per core, and the domain classifier's small matrices run
# several times slower when OpenBLAS spreads them over threads (set before numpy is first imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from streams.config import ConfigError, Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "bootstrap", None):
        overrides["bootstrap_servers"] = args.bootstrap
    return load_settings(getattr(args, "config", None), **overrides)


def cmd_kafka(args: argparse.Namespace) -> int:
    from streams.broker.local import from_settings

    s = _settings(args)
    broker = from_settings(s)
    if args.action == "up":
        if not s.uses_local_broker:
            print(f"bootstrap_servers is set ({s.bootstrap_servers}); not starting a local broker")
            return 0
        print(f"starting Apache Kafka {s.kafka_version} (KRaft) on {broker.bootstrap} ...", flush=True)
        print(f"ready: {broker.up()}")
    elif args.action == "down":
        print("stopped" if broker.down() else "not running")
    else:
        print(json.dumps(broker.status(), indent=2))
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.broker.admin import create_topics
    from streams.topics import resolved

    s = _settings(args)
    if args.action == "create":
        for name, state in create_topics(s).items():
            print(f"{name:40s} {state}")
    else:
        for name, partitions, spec in resolved(s):
            print(f"{name:40s} partitions={partitions:<3d} {spec.kafka_config()}  # {spec.description}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from streams.app.factory import create_app
    from streams.app.heap import FreezeAfterFullCollections
    from streams.broker.admin import create_topics

    s = _settings(args)
    create_topics(s)
    dl = create_app(s, live_interval_s=args.live)
    if s.detection.enabled:
        dl.follow_profiles()
    if s.alert_rules:
        dl.follow_control()
    FreezeAfterFullCollections().install()
    worker = faust.Worker(dl.app, loglevel=s.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def _scenario_for(args: argparse.Namespace, default: Path | None = None) -> Any:
    """The scenario of ``--scenario`` (or ``default``), with ``--rate`` and ``--seed`` applied."""
    from dataclasses import replace

    from streams.sim import load_scenario

    path = args.scenario or default
    if path is None:
        raise ValueError("no scenario file")
    scenario = load_scenario(path)
    if args.rate:
        scenario = scenario.with_total_rate(args.rate)
    if args.seed is not None:
        scenario = replace(scenario, seed=args.seed)
    return scenario


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulated model servers: a scenario file's fleet, or the classic traffic (``--models``, ``--rate``)."""
    from streams.broker.admin import create_topics
    from streams.sim import ScenarioError, legacy_scenario, run_fleet
    from streams.sim.harness import IncidentClock

    s = _settings(args)
    try:
        if args.scenario:
            scenario = _scenario_for(args)
            duration = args.duration
        else:
            duration = 60.0 if args.duration is None else args.duration
            scenario = legacy_scenario(args.models, args.rate or 2000, duration, args.garbage_every,
                                       7 if args.seed is None else args.seed, args.drift_after)
    except ScenarioError as exc:
        print(f"driftline: scenario error: {exc}", file=sys.stderr)
        return 2
    create_topics(s)  # idempotent; the SDK cannot create them (the local broker does not auto-create)
    clock: list[IncidentClock] = []

    def announce(t0: float) -> None:
        if not clock:
            clock.append(IncidentClock(scenario.incidents, t0))
        for what, inc in clock[0].due(time.time()):
            print(f"[simulate] {'injecting' if what == 'start' else 'ended'} {inc.kind} on {inc.model}",
                  flush=True)

    stats = run_fleet(scenario, s.bootstrap, s.topic_prefix, duration_s=duration or None,
                      forever=duration == 0, on_tick=announce)
    print(json.dumps(stats))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A scenario end to end in one terminal: broker, topics, worker (live view), fleet, alerts as they come.

    Every run gets its own topics and worker app id (``demo-<time>``), so no
    state from an earlier demo comes back; they are deleted at the end unless
    ``--keep-topics``.
    """
    import shutil
    import socket

    import yaml
    from rich.console import Console

    from streams.broker.admin import create_topics
    from streams.broker.local import from_settings
    from streams.sim import DEMO_SCENARIO, ScenarioError
    from streams.sim.fleet import Fleet
    from streams.sim.harness import (
        AlertReader,
        IncidentClock,
        ReceivedAlert,
        RunNamespace,
        WorkerProcess,
        delete_run_topics,
        free_port,
    )

    console = Console()

    def say(text: str, style: str | None = None) -> None:
        console.print(text, style=style, markup=False, highlight=False)

    s = _settings(args)
    try:
        scenario = _scenario_for(args, DEMO_SCENARIO)
    except ScenarioError as exc:
        print(f"driftline: scenario error: {exc}", file=sys.stderr)
        return 2
    user_file = args.config or os.environ.get("DRIFTLINE_CONFIG")
    base_config = (yaml.safe_load(Path(user_file).read_text()) or {}) if user_file else {}
    if s.uses_local_broker:
        say(f"[demo] local Apache Kafka {s.kafka_version} on {s.bootstrap} "
            "(first run downloads the broker with mvn) ...")
        from_settings(s).up()
    with socket.socket() as probe:
        port_taken = probe.connect_ex((s.web_host, s.web_port)) == 0
    ns = RunNamespace.create(s, scenario, Path(".driftline/demo"), "demo", base_config=base_config,
                             web_port=free_port() if port_taken else s.web_port)
    create_topics(ns.settings)
    duration_s = scenario.duration_s if args.duration is None else args.duration
    say(f"[demo] scenario {scenario.name}: {scenario.description}")
    say(f"[demo] topics {ns.settings.topic_prefix}*; worker settings {ns.config_path}; "
        f"metrics http://{s.web_host}:{ns.settings.web_port}/metrics")
    for m in scenario.models:
        versions = ", ".join(v for v, _ in m.versions)
        say(f"[demo] model {m.name} ({versions}): {m.rate_per_s:,.0f} predictions/s, "
            f"{len(m.hosts)} host(s){', GPU' if m.gpus else ''}")
    for inc in scenario.incidents:
        say(f"[demo] at {inc.at_s:>4.0f} s for {inc.duration_s:.0f} s: {inc.kind} on {inc.model}")
    worker = WorkerProcess(ns, live_s=args.live)
    fleet: Fleet | None = None
    reader: AlertReader | None = None
    fired: dict[str, int] = {}
    try:
        worker.wait_ready()
        fleet = Fleet(scenario, ns.settings.bootstrap, ns.settings.topic_prefix,
                      duration_s=duration_s or None, forever=duration_s == 0)
        t0 = fleet.start()
        say(f"[demo] simulated model servers started ({len(fleet.groups)} processes); Ctrl-C stops")

        def show(got: ReceivedAlert) -> None:
            e = got.event
            firing = e.get("status") == "firing"
            muted = (e.get("evidence") or {}).get("muted_by")
            if firing and not muted:
                fired[str(e.get("signal"))] = fired.get(str(e.get("signal")), 0) + 1
            colour = "green" if not firing else "yellow" if muted else "bold red"
            state = "RESOLVED" if not firing else "FIRING (muted)" if muted else "FIRING"
            summary = (e.get("annotations") or {}).get("summary", "")
            say(f"[{got.arrival - t0:5.0f}s] alert {state} {e.get('signal')} {e.get('model')}: {summary}",
                colour)

        reader = AlertReader(ns.settings, on_alert=show)
        clock = IncidentClock(scenario.incidents, t0)
        deadline = t0 + duration_s + 5.0 if duration_s > 0 else float("inf")
        while time.time() < deadline and worker.proc.poll() is None:
            for what, inc in clock.due(time.time()):
                if what == "start":
                    say(f"[{time.time() - t0:5.0f}s] [demo] injecting {inc.kind} on {inc.model}", "bold")
                else:
                    say(f"[{time.time() - t0:5.0f}s] [demo] {inc.kind} on {inc.model} ended")
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if fleet is not None:
            fleet.stop()
        if reader is not None:
            reader.close()
        worker.stop()
        if not args.keep_topics:
            try:
                delete_run_topics(ns.settings)
                shutil.rmtree(ns.work_dir, ignore_errors=True)
            except Exception as exc:
                say(f"[demo] could not delete the demo's topics: {exc}")
    counts = ", ".join(f"{rule} x{n}" for rule, n in sorted(fired.items())) or "none"
    say(f"[demo] alerts fired: {counts}")
    if s.uses_local_broker:
        say("[demo] stopped (the broker keeps running: `driftline kafka down` stops it)")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from streams.profile_cli import cmd_profile as run

    return run(args, _settings(args))


class Heartbeat:
    """When the notifier's consume loop last came round (monotonic seconds); read by ``/healthz``."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    def beat(self) -> None:
        self.at = time.monotonic()

    def age_s(self) -> float:
        return time.monotonic() - self.at


def serve_liveness(host: str, port: int, heartbeat: Heartbeat, max_age_s: float) -> Any:
    """Serve ``GET /healthz`` from a daemon thread: 200 while the loop beat within ``max_age_s``, else 503.

    The notifier is a synchronous poll loop with no web server of its own. A
    bare TCP or HTTP check would only prove that *this* thread runs; asking
    for the loop's last beat proves the loop itself is not stuck (a hung
    receiver call, a wedged commit), which is what a liveness probe should
    restart. ``max_age_s`` must exceed the longest legitimate iteration
    (a commit waits up to 30 s for dead letters to be acknowledged).
    Returns the server (``shutdown()`` stops it).
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            if self.path.split("?")[0] != "/healthz":
                self.send_error(404)
                return
            age = heartbeat.age_s()
            ok = age <= max_age_s
            body = json.dumps({"status": "ok" if ok else "stalled", "loop_age_s": round(age, 1),
                               "max_age_s": max_age_s}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="notify-liveness", daemon=True).start()
    return server


def cmd_notify(args: argparse.Namespace) -> int:
    """Run the notifier until SIGINT or SIGTERM (its own consumer group on the alerts topic)."""
    from streams.broker.admin import create_topics
    from streams.notify.config import notify_config
    from streams.notify.dedup import FileDeliveryLog
    from streams.notify.service import run

    s = _settings(args)
    try:
        cfg = notify_config(s.extra.get("notify"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    Path(cfg.delivery_log).parent.mkdir(parents=True, exist_ok=True)
    create_topics(s)
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    print(f"notify: {len(cfg.channels)} receivers ({', '.join(sorted(cfg.channels))}), "
          f"delivery log {cfg.delivery_log}", flush=True)
    delay_s = float(os.environ.get("DRIFTLINE_NOTIFY_FAULT_COMMIT_DELAY_S", "0"))  # fault injection (tests)
    heartbeat = Heartbeat()
    if args.health_port:
        serve_liveness(s.web_host, args.health_port, heartbeat, args.health_max_age)

    def stop() -> bool:  # the loop asks every iteration: that is its heartbeat
        heartbeat.beat()
        return bool(stopping)

    run(s, cfg, FileDeliveryLog(cfg.delivery_log), stop=stop, commit_delay_s=delay_s)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from streams.deploy_cli import cmd_deploy as run

    return run(args, _settings(args))


def cmd_silence(args: argparse.Namespace) -> int:
    from streams.silence_cli import cmd_silence as run

    return run(args, _settings(args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="driftline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML settings file (also DRIFTLINE_CONFIG)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers; default: the local broker")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("kafka", help="the embedded local broker")
    k.add_argument("action", choices=["up", "down", "status"])
    k.set_defaults(func=cmd_kafka)
    t = sub.add_parser("topics", help="topic definitions")
    t.add_argument("action", choices=["create", "list"])
    t.set_defaults(func=cmd_topics)
    w = sub.add_parser("worker", help="run a stream worker")
    w.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                   help="print what flowed every SECONDS")
    w.set_defaults(func=cmd_worker)
    pr = sub.add_parser("profile", help="reference profiles: build from training data, publish, show")
    pr.add_argument("action", choices=["build", "publish", "show"])
    pr.add_argument("path", help="build: a .csv/.jsonl/.parquet file; publish: a profile file; show: a model")
    pr.add_argument("--model", help="build: the model the profile is for")
    pr.add_argument("--version", help="the model version (default: any version)")
    pr.add_argument("--prediction", help="build: the column holding the model's output")
    pr.add_argument("--exclude", help="build: comma-separated columns to leave out (labels, ids)")
    pr.add_argument("--out", help="build: write the profile to this file")
    pr.add_argument("--publish", action="store_true", help="build: publish to the profiles topic")
    pr.set_defaults(func=cmd_profile)
    nt = sub.add_parser("notify", help="deliver alert events to the configured receivers")
    nt.add_argument("--health-port", type=int, default=0, metavar="PORT",
                    help="serve GET /healthz on web_host:PORT (liveness: the consume loop beats; 0: off)")
    nt.add_argument("--health-max-age", type=float, default=90.0, metavar="SECONDS",
                    help="/healthz answers 503 when the loop has not come round for this long (default 90)")
    nt.set_defaults(func=cmd_notify)
    dp = sub.add_parser("deploy", help="deployment manifests generated from the code (Strimzi KafkaTopic)")
    dp.add_argument("what", choices=["topics"])
    dp.add_argument("--app-id", help="the worker's app id (default: the settings')")
    dp.add_argument("--prefix", help="topic prefix (default: the settings')")
    dp.add_argument("--cluster", default="my-cluster", help="the Strimzi Kafka cluster (strimzi.io/cluster)")
    dp.add_argument("--namespace", help="the namespace the Strimzi Topic Operator watches")
    dp.add_argument("--partitions", type=int, help="default partitions (default: the settings')")
    dp.add_argument("--replicas", type=int, help="replication factor (default: the settings')")
    dp.add_argument("--out", help="write to this file instead of standard output")
    dp.set_defaults(func=cmd_deploy)
    si = sub.add_parser("silence", help="silence alerts: add, list, expire")
    si.add_argument("action", choices=["add", "list", "expire"])
    si.add_argument("id", nargs="?", help="expire: the silence id")
    si.add_argument("--match", action="append", help="name=value, name!=value, name=~regex, name!~regex")
    si.add_argument("--duration", default="2h", help="how long, e.g. 30m, 2h (default 2h)")
    si.add_argument("--comment", help="why")
    si.add_argument("--by", help="who (default: the current user)")
    si.set_defaults(func=cmd_silence)
    sm = sub.add_parser("simulate", help="simulated model servers: a scenario file, or classic traffic")
    sm.add_argument("--scenario", help="a scenario file (e.g. loadtest/scenarios/all_incidents.yaml); "
                                       "without it: --models models, model-0 drifting after --drift-after")
    sm.add_argument("--models", type=int, default=3, help="classic traffic: number of models")
    sm.add_argument("--rate", type=float, default=None,
                    help="predictions per second in all (a scenario's rates are scaled; classic: 2000)")
    sm.add_argument("--duration", type=float, default=None,
                    help="seconds; 0 = until Ctrl-C (default: the scenario's length; classic: 60)")
    sm.add_argument("--seed", type=int, default=None,
                    help="random seed (default: the scenario's; classic: 7)")
    sm.add_argument("--drift-after", type=float, default=90.0,
                    help="classic traffic: seconds after which model-0 drifts (inputs, accuracy); 0 = never")
    sm.add_argument("--garbage-every", type=float, default=0.0,
                    help="classic traffic: five malformed records every so many seconds")
    sm.set_defaults(func=cmd_simulate)
    dm = sub.add_parser("demo", help="broker, worker, simulated servers and incidents, alerts as they arrive")
    dm.add_argument("--scenario",
                    help="a scenario file (default: streams/sim/scenarios/demo.yaml, under 3 min)")
    dm.add_argument("--rate", type=float, default=None,
                    help="predictions per second in all (rates are scaled)")
    dm.add_argument("--duration", type=float, default=None,
                    help="seconds of traffic; 0 = until Ctrl-C (default: the scenario's length)")
    dm.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    dm.add_argument("--live", type=float, default=10.0, metavar="SECONDS",
                    help="the worker's live table every SECONDS (0: off)")
    dm.add_argument("--keep-topics", action="store_true", help="keep the run's topics afterwards")
    dm.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # faust's worker parses sys.argv itself; hand it only the program name.
    sys.argv = sys.argv[:1]
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"driftline: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
