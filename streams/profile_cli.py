"""``driftline profile``: build a reference profile from training data, publish it, show it.

    driftline profile build train.csv --model fraud [--version v3] [--prediction score]
                            [--exclude label,id] [--out fraud.profile.json] [--publish]
    driftline profile publish fraud.profile.json
    driftline profile show fraud [--version v3]

CSV (header row; empty cells are missing; cells that parse as numbers are
numbers), JSON lines (one object of feature values per line) and Parquet
(needs ``pyarrow``) are read in chunks of 10 000 rows and folded into a
:class:`~streams.core.drift.profile.ProfileBuilder`, so a large training set
never has to fit in memory.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from streams.config import ConfigError, Settings

CHUNK_ROWS = 10_000


def _cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _rows_csv(path: Path) -> Iterator[list[dict[str, Any]]]:
    with path.open(newline="") as f:
        chunk: list[dict[str, Any]] = []
        for row in csv.DictReader(f):
            chunk.append({k: _cell(v) for k, v in row.items() if k is not None})
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _rows_jsonl(path: Path) -> Iterator[list[dict[str, Any]]]:
    with path.open("rb") as f:
        chunk: list[dict[str, Any]] = []
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{n}: expected an object of feature values")
            chunk.append(obj)
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _rows_parquet(path: Path) -> Iterator[list[dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading Parquet needs pyarrow: pip install 'driftline[parquet]'") from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS):
        yield batch.to_pylist()


def read_chunks(path: Path) -> Iterator[list[dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _rows_csv(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _rows_jsonl(path)
    if suffix in (".parquet", ".pq"):
        return _rows_parquet(path)
    raise ConfigError(f"{path}: unknown format {suffix!r} (expected .csv, .jsonl or .parquet)")


def build_profile(
    path: Path, model: str, version: str | None, prediction: str | None, exclude: set[str], created_ms: int
) -> Any:
    from streams.core.drift.profile import ProfileBuilder

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    builder = ProfileBuilder()
    rows_seen = 0
    for chunk in read_chunks(path):
        names = sorted({k for row in chunk for k in row} - exclude - ({prediction} if prediction else set()))
        features = {k: [row.get(k) for row in chunk] for k in names}
        preds = [row.get(prediction) for row in chunk] if prediction else None
        builder.add(features, preds)
        rows_seen += len(chunk)
    if rows_seen == 0:
        raise ConfigError(f"{path}: no rows")
    return builder.build(model, version, created_ms, f"file:{path.name}")


def _producer(settings: Settings) -> Any:
    from confluent_kafka import Producer

    return Producer(
        settings.kafka_client_config({
            "enable.idempotence": True,
            "acks": "all",
            "message.max.bytes": 16 * 1024 * 1024,
        })
    )


def publish(settings: Settings, key: bytes, value: bytes) -> None:
    from streams.broker.admin import create_topics

    create_topics(settings)
    p = _producer(settings)
    errors: list[str] = []
    p.produce(
        settings.topic("profiles"),
        key=key,
        value=value,
        on_delivery=lambda err, msg: errors.append(str(err)) if err else None,
    )
    if p.flush(30) != 0 or errors:
        raise ConfigError(f"profiles: could not publish {key.decode()}: {errors or 'timed out'}")


def cmd_profile(args: Any, settings: Settings) -> int:
    from streams.app.profiles import profile_key
    from streams.core.drift.profile import ReferenceProfile

    if args.action == "build":
        if not args.model:
            raise ConfigError("--model: required to build a profile")
        exclude = {c for c in (args.exclude or "").split(",") if c}
        prof = build_profile(
            Path(args.path), args.model, args.version, args.prediction, exclude, int(time.time() * 1000)
        )
        value = prof.to_json()
        if args.out:
            Path(args.out).write_bytes(value)
            print(
                f"wrote {args.out} ({len(value):,} bytes, {prof.n_events:,} rows, "
                f"{len(prof.features)} features)"
            )
        if args.publish:
            publish(settings, profile_key(prof.model, prof.model_version), value)
            print(
                f"published {profile_key(prof.model, prof.model_version).decode()} "
                f"to {settings.topic('profiles')}"
            )
        if not args.out and not args.publish:
            sys.stdout.buffer.write(value + b"\n")
        return 0
    if args.action == "publish":
        value = Path(args.path).read_bytes()
        try:
            prof = ReferenceProfile.from_json(value)
        except ValueError as exc:
            raise ConfigError(f"{args.path}: not a valid profile: {exc}") from None
        publish(settings, profile_key(prof.model, prof.model_version), value)
        print(f"published {profile_key(prof.model, prof.model_version).decode()}")
        return 0
    from streams.app.profiles import ProfileStore, follow_profiles

    store = ProfileStore()
    follow_profiles(settings.bootstrap, settings.topic("profiles"), store,
                    client_config=settings.kafka_client_config()).stop()
    found = store.get(args.path, args.version or "*")
    if found is None:
        print(f"no profile for {args.path} {args.version or '(any version)'}", file=sys.stderr)
        return 1
    pid, prof = found
    summary = {
        "id": pid,
        "model": prof.model,
        "model_version": prof.model_version,
        "source": prof.source,
        "n_events": prof.n_events,
        "created_ms": prof.created_ms,
        "features": sorted(prof.features),
    }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0
