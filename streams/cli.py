"""``driftline``: the command line.

    driftline kafka up|down|status     the embedded local broker
    driftline topics create|list       apply streams/topics.py to the cluster
    driftline worker [--live]          run a stream worker
    driftline simulate                 simulated model servers (uses the SDK)
    driftline demo                     broker + topics + worker + simulator, live output
    driftline profile build|publish|show   reference profiles for drift detection
    driftline notify                   deliver alert events to receivers (webhook, Slack, email, Alertmanager)
    driftline silence add|list|expire  silence alerts by label matchers (control topic)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    from streams.broker.admin import create_topics

    s = _settings(args)
    create_topics(s)
    dl = create_app(s, live_interval_s=args.live)
    if s.detection.enabled:
        dl.follow_profiles()
    if s.alert_rules:
        dl.follow_control()
    worker = faust.Worker(dl.app, loglevel=s.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.sim import run_simulation

    s = _settings(args)
    stats = run_simulation(s, models=args.models, rate_per_s=args.rate, duration_s=args.duration,
                           garbage_every_s=args.garbage_every, drift_after_s=args.drift_after)
    print(json.dumps(stats))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything a newcomer needs to watch events flow, in one process tree."""
    from streams.broker.admin import create_topics
    from streams.broker.local import from_settings

    s = _settings(args)
    if s.uses_local_broker:
        print(f"[demo] local Apache Kafka {s.kafka_version} on {s.bootstrap} "
              "(first run downloads the broker with mvn) ...", flush=True)
        from_settings(s).up()
    for name, state in create_topics(s).items():
        print(f"[demo] topic {name}: {state}", flush=True)
    env = dict(os.environ, DRIFTLINE_BOOTSTRAP_SERVERS=s.bootstrap)
    Path(".driftline").mkdir(exist_ok=True)
    sim_log = open(".driftline/simulator.log", "w")  # noqa: SIM115
    simulator = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "simulate", "--models", str(args.models),
         "--rate", str(args.rate), "--duration", str(args.duration), "--garbage-every", "5",
         "--drift-after", str(args.drift_after)],
        env=env, stdout=sim_log, stderr=subprocess.STDOUT,
    )
    print(f"[demo] simulated model servers: {args.models} models, {args.rate:,} predictions/s, "
          f"a burst of garbage every 5 s (log: .driftline/simulator.log)", flush=True)
    if args.drift_after > 0:
        print(f"[demo] model-0 drifts after {args.drift_after:.0f} s: watch 'recent signals'", flush=True)
    print(f"[demo] worker metrics: http://{s.web_host}:{s.web_port}/metrics", flush=True)
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--live", "3"], env=env)
    try:
        deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
        while time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in (simulator, worker):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (simulator, worker):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    print("[demo] stopped (the broker keeps running: `driftline kafka down` stops it)")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from streams.profile_cli import cmd_profile as run

    return run(args, _settings(args))


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
    run(s, cfg, FileDeliveryLog(cfg.delivery_log), stop=lambda: bool(stopping), commit_delay_s=delay_s)
    return 0


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
    nt.set_defaults(func=cmd_notify)
    si = sub.add_parser("silence", help="silence alerts: add, list, expire")
    si.add_argument("action", choices=["add", "list", "expire"])
    si.add_argument("id", nargs="?", help="expire: the silence id")
    si.add_argument("--match", action="append", help="name=value, name!=value, name=~regex, name!~regex")
    si.add_argument("--duration", default="2h", help="how long, e.g. 30m, 2h (default 2h)")
    si.add_argument("--comment", help="why")
    si.add_argument("--by", help="who (default: the current user)")
    si.set_defaults(func=cmd_silence)
    for name, func, dur in (("simulate", cmd_simulate, 60.0), ("demo", cmd_demo, 0.0)):
        sp = sub.add_parser(name)
        sp.add_argument("--models", type=int, default=3)
        sp.add_argument("--rate", type=int, default=2000, help="predictions per second in all")
        sp.add_argument("--duration", type=float, default=dur, help="seconds; 0 = until Ctrl-C")
        sp.add_argument("--drift-after", type=float, default=90.0,
                        help="seconds after which model-0 drifts (inputs and accuracy); 0 = never")
        if name == "simulate":
            sp.add_argument("--garbage-every", type=float, default=0.0,
                            help="send a burst of malformed records every so many seconds")
        sp.set_defaults(func=func)
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
