"""Example downstream consumer: switch traffic back to the previous model version on an accuracy alert.

    python examples/rollback_on_accuracy.py --bootstrap 127.0.0.1:9092 --registry registry.json

It reads Driftline's alert events (``driftline.alert/v1`` on ``<prefix>alerts``)
in its own consumer group, and when an accuracy alert fires for the version that
serves traffic, it makes the version deployed before it the active one again.

The "traffic switch" here is a JSON file, the version registry, that a router
is assumed to read::

    {"fraud": {"versions": ["v1", "v2", "v3"], "active": "v3"}}

``versions`` is the deployment order, oldest first. Replace
:func:`switch_active` with a call to your router or serving platform; keep
:func:`decide` as it is.

Three parts, each usable alone:

* :func:`decide`: pure; an alert event and the registry in, a :class:`Decision` out.
* :func:`switch_active`: the action; writes the registry atomically (a
  temporary file, then a rename), so a router never reads half a file.
* :func:`run`: the Kafka loop. It commits each record's offset only after
  acting on it (at least once). A crash between the switch and the commit
  replays the alert, and the replay changes nothing: the alerting version is
  no longer the active one, so :func:`decide` says no, and switching to the
  version already active would be a no-op anyway.

Why a resolved alert does nothing: accuracy that recovers after a rollback says
the *previous* version is fine, not that the rolled-back one was. The alert
resolves because its version stopped serving (or its window emptied), so an
automatic roll-forward would just bring the bad version back. Rolling forward
is a deployment decision for a person.

Why no ``evidence.suggested_action`` check: the default ``accuracy_low`` rule
suggests ``retrain``, the lasting fix; a rollback is the stopgap until then.
Choose which rules trigger it by name (``--alert-name``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer

from streams.events.models import AlertV1

log = logging.getLogger("driftline.examples.rollback")

#: Rules whose firing means "this version predicts worse than it should" (rule names, see rules.py).
DEFAULT_ALERT_NAMES: frozenset[str] = frozenset({"accuracy_low"})

# Never pickle: the record comes from a topic other processes write. msgspec decodes and validates
# in one pass and ignores fields added by later versions of the alert contract.
_decode_alert = msgspec.json.Decoder(AlertV1).decode


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do about one alert: switch ``model`` from ``from_version`` to ``to_version``, or not."""

    act: bool
    reason: str
    model: str = ""
    from_version: str = ""
    to_version: str = ""


def decide(
    alert: Mapping[str, Any],
    registry: Mapping[str, Any],
    alert_names: Collection[str] = DEFAULT_ALERT_NAMES,
) -> Decision:
    """Whether ``alert`` (an alert event as JSON-decoded) should roll its model back, and to what.

    Acts only on a ``firing``, unmuted alert of one of ``alert_names`` (the
    event's ``signal`` is the rule name) that names the model version that is
    active in ``registry``, when an earlier version exists.

    >>> reg = {"fraud": {"versions": ["v1", "v2"], "active": "v2"}}
    >>> alert = {"status": "firing", "signal": "accuracy_low", "model": "fraud", "model_version": "v2"}
    >>> d = decide(alert, reg)
    >>> d.act, d.to_version
    (True, 'v1')
    """
    name, model, version = alert.get("signal"), alert.get("model", ""), alert.get("model_version")
    if name not in alert_names:
        return Decision(False, f"{name!r} is not an accuracy alert")
    if alert.get("status") != "firing":
        return Decision(False, "resolved: no automatic roll-forward")
    muted_by = (alert.get("evidence") or {}).get("muted_by")
    if muted_by:  # a silence (planned retraining, say) or an inhibiting alert: a person is on it
        return Decision(False, f"muted by {muted_by}")
    if not version:
        return Decision(False, f"{model}: the alert names no model_version")
    entry = registry.get(model)
    if entry is None:
        return Decision(False, f"{model}: not in the registry")
    versions, active = list(entry["versions"]), entry["active"]
    if version != active:  # rolled back already (a replay or a repeat), or a shadow/challenger version
        return Decision(False, f"{model}: {version} is not the active version ({active})")
    if version not in versions or versions.index(version) == 0:
        return Decision(False, f"{model}: no version deployed before {version}")
    previous = versions[versions.index(version) - 1]
    return Decision(True, f"{name} fired for active version {version}", model, version, previous)


def load_registry(path: Path) -> dict[str, Any]:
    """Read and check the registry; a malformed one raises ``ValueError`` naming the model."""
    registry = json.loads(path.read_text())
    if not isinstance(registry, dict):
        raise ValueError(f"{path}: expected an object of model -> {{versions, active}}")
    for model, entry in registry.items():
        versions = entry.get("versions") if isinstance(entry, dict) else None
        if not (isinstance(versions, list) and all(isinstance(v, str) for v in versions)):
            raise ValueError(f"{path}: {model}.versions must be a list of version strings")
        if entry.get("active") not in versions:
            raise ValueError(f"{path}: {model}.active must be one of {model}.versions")
    return registry


def switch_active(path: Path, model: str, version: str) -> bool:
    """Make ``version`` the active version of ``model``; False (and no write) when it already is.

    Written to a temporary file in the same directory, flushed to disk, then
    renamed over the registry: a reader sees the old file or the new one,
    never a partial one, and a crash leaves one of the two.
    """
    registry = load_registry(path)
    entry = registry[model]
    if entry["active"] == version:
        return False
    if version not in entry["versions"]:
        raise ValueError(f"{model}: {version} is not a deployed version")
    registry[model] = {**entry, "active": version}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(registry, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777)  # mkstemp makes it 0600; keep the registry's mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable before we commit
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def handle(value: bytes | None, registry_path: Path, alert_names: Collection[str]) -> Decision | None:
    """Decode one record value and act on it; ``None`` when it is not an alert (logged, skipped)."""
    try:
        alert = msgspec.to_builtins(_decode_alert(value or b""))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("skipping a record that is not a driftline.alert/v1 event: %s", exc)
        return None
    decision = decide(alert, load_registry(registry_path), alert_names)
    if decision.act:
        switch_active(registry_path, decision.model, decision.to_version)
        log.warning("rolled %s back from %s to %s: %s (alert %s)", decision.model,
                    decision.from_version, decision.to_version, decision.reason, alert["fingerprint"])
    elif alert["signal"] in alert_names:
        log.info("no rollback for alert %s: %s", alert["fingerprint"], decision.reason)
    return decision


def run(
    bootstrap: str,
    topic: str,
    group: str,
    registry_path: Path,
    alert_names: Collection[str] = DEFAULT_ALERT_NAMES,
    stop: Callable[[], bool] = lambda: False,
    offset_reset: str = "latest",
    poll_timeout_s: float = 0.5,
) -> None:
    """Consume ``topic`` in consumer group ``group`` until ``stop()``, committing after each action.

    ``offset_reset`` applies only to a group with no committed offset yet:
    ``latest`` by default, so a first start does not replay weeks of alerts
    and roll back on one that has long since resolved.

    An unreadable registry raises, and the record stays uncommitted: after a
    fix and a restart the alert is handled again.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": offset_reset,
    })
    consumer.subscribe([topic])
    try:
        while not stop():
            msg = consumer.poll(poll_timeout_s)
            if msg is None:
                continue
            if msg.error():
                log.warning("consumer: %s", msg.error())
                continue
            handle(msg.value(), registry_path, alert_names)
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    """The command line; unset options come from ``DRIFTLINE_*`` variables, as for the worker."""
    from streams.config import load_settings

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--registry", type=Path, required=True, help="the version registry (JSON)")
    p.add_argument("--bootstrap",
                   help="Kafka bootstrap servers (default: $DRIFTLINE_BOOTSTRAP_SERVERS or 127.0.0.1:9092)")
    p.add_argument("--topic-prefix", help="Driftline's topic prefix (default: driftline.)")
    p.add_argument("--app-id", help="Driftline's app id; the consumer group is <app-id>-rollback")
    p.add_argument("--alert-name", action="append", dest="alert_names",
                   help="a rule whose alert triggers a rollback; repeatable (default: accuracy_low)")
    p.add_argument("--from-beginning", action="store_true",
                   help="on the group's first start, read the alerts topic from its start, not its end")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings(bootstrap_servers=args.bootstrap, topic_prefix=args.topic_prefix,
                             app_id=args.app_id)
    try:
        load_registry(args.registry)  # fail now, not at the first alert
    except (OSError, ValueError) as exc:
        p.error(f"--registry: {exc}")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    run(settings.bootstrap, settings.topic("alerts"), f"{settings.app_id}-rollback", args.registry,
        frozenset(args.alert_names or DEFAULT_ALERT_NAMES), stopping.is_set,
        "earliest" if args.from_beginning else "latest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
