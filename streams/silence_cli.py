"""``driftline silence add|list|expire``: silences on the compacted control topic.

    driftline silence add --match model=fraud --match 'alertname=~".*drift"' --duration 2h \\
                          --comment "retraining fraud v4" [--by alice]
    driftline silence list
    driftline silence expire <id>

A silence is one record keyed ``silence:<id>``; every worker follows the
control topic whole and applies it within a second. ``expire`` writes a
tombstone: workers end the silence at once and compaction forgets it.
"""

from __future__ import annotations

import getpass
import time
import uuid
from typing import Any

from streams.config import ConfigError, Settings

PREFIX = "silence:"


def _producer(settings: Settings) -> Any:
    from confluent_kafka import Producer

    return Producer(settings.kafka_client_config({"enable.idempotence": True, "acks": "all"}))


def _send(settings: Settings, key: str, value: bytes | None) -> None:
    from streams.broker.admin import create_topics

    create_topics(settings)
    p = _producer(settings)
    errors: list[str] = []
    p.produce(
        settings.topic("control"),
        key=key.encode(),
        value=value,
        on_delivery=lambda err, msg: errors.append(str(err)) if err else None,
    )
    if p.flush(30) != 0 or errors:
        raise ConfigError(f"control: could not write {key}: {errors or 'timed out'}")


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def current(settings: Settings) -> list[Any]:
    """The silences the control topic holds now (in force or scheduled)."""
    from streams.app.alerting_stage import LockedSilences
    from streams.app.profiles import TopicFollower

    silences = LockedSilences()
    now = int(time.time() * 1000)
    follower = TopicFollower(
        settings.bootstrap, settings.topic("control"), lambda k, v: silences.apply_record(k, v, now),
        settings.kafka_client_config(),
    )
    follower.start(30)
    follower.stop()
    return sorted((s for s in silences if s.ends_at_ms > now), key=lambda s: s.starts_at_ms)


def cmd_silence(args: Any, settings: Settings) -> int:
    from streams.core.alerting.silences import Matcher, Silence
    from streams.core.windows import parse_duration_ms

    if args.action == "add":
        if not args.match:
            raise ConfigError("--match: at least one name=value (or =~ regex) is needed")
        try:
            matchers = tuple(Matcher.parse(m) for m in args.match)
            now = int(time.time() * 1000)
            silence = Silence(
                uuid.uuid4().hex[:16],
                matchers,
                now,
                now + parse_duration_ms(args.duration),
                args.by or getpass.getuser(),
                args.comment or "",
            )
        except ValueError as exc:
            raise ConfigError(f"silence: {exc}") from None
        _send(settings, PREFIX + silence.id, silence.encode())
        print(f"{silence.id}  until {_utc(silence.ends_at_ms)}")
        return 0
    if args.action == "expire":
        if not args.id:
            raise ConfigError("expire: the silence id is needed")
        _send(settings, PREFIX + args.id, None)
        print(f"expired {args.id}")
        return 0
    for s in current(settings):
        shown = " ".join(map(str, s.matchers))
        print(f"{s.id}  until {_utc(s.ends_at_ms)}  by {s.created_by}  {shown}  # {s.comment}")
    return 0
