"""Worker settings: defaults, then a YAML file, then ``DRIFTLINE_*`` environment variables.

Every value is checked at start-up; a bad one raises :class:`ConfigError`
naming the field and where it came from, so a misconfigured deployment fails
before it touches Kafka rather than minutes later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_LOCAL_BOOTSTRAP = "127.0.0.1:9092"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, the CLI and the local broker need.

    ``bootstrap_servers`` empty means "the embedded local broker"; any other
    value points every component at that cluster instead.
    """

    bootstrap_servers: str = ""
    topic_prefix: str = "driftline."
    app_id: str = "driftline-worker"
    data_dir: str = ".driftline/worker"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    partitions: int = 4
    replication_factor: int = 1
    max_record_bytes: int = 4 * 1024 * 1024
    kafka_version: str = "4.3.1"
    kafka_cache_dir: str = str(Path.home() / ".cache" / "driftline" / "kafka")
    local_broker_dir: str = ".driftline/kafka"
    local_broker_port: int = 9092
    local_controller_port: int = 9093
    log_level: str = "warn"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """The address clients use: the configured cluster, else the local broker."""
        return self.bootstrap_servers or f"127.0.0.1:{self.local_broker_port}"

    @property
    def uses_local_broker(self) -> bool:
        return not self.bootstrap_servers

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


_INT_FIELDS = {f.name for f in fields(Settings) if f.type in ("int", int)}
_STR_FIELDS = {f.name for f in fields(Settings) if f.type in ("str", str)}
_BOUNDS = {
    "web_port": (1, 65535),
    "partitions": (1, 10_000),
    "replication_factor": (1, 32),
    "max_record_bytes": (1024, 64 * 1024 * 1024),
    "local_broker_port": (1, 65535),
    "local_controller_port": (1, 65535),
}
_LOG_LEVELS = ("crit", "error", "warn", "info", "debug")


def _coerce(name: str, raw: Any, source: str) -> Any:
    if name in _INT_FIELDS:
        if isinstance(raw, bool):
            raise ConfigError(f"{name} (from {source}): expected an integer, got {raw!r}")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} (from {source}): expected an integer, got {raw!r}") from None
        lo, hi = _BOUNDS.get(name, (-(2**63), 2**63))
        if not lo <= value <= hi:
            raise ConfigError(f"{name} (from {source}): must be in [{lo}, {hi}], got {value}")
        return value
    if not isinstance(raw, str):
        raise ConfigError(f"{name} (from {source}): expected a string, got {type(raw).__name__}")
    return raw


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from a YAML file, the environment and keyword overrides (in that order).

    Environment variables are the field names upper-cased with a ``DRIFTLINE_``
    prefix, e.g. ``DRIFTLINE_BOOTSTRAP_SERVERS``; ``DRIFTLINE_BOOTSTRAP`` is an
    accepted alias for the bootstrap address.
    """
    env = os.environ if env is None else env
    known = {f.name for f in fields(Settings)} - {"extra"}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    config_path = path or env.get("DRIFTLINE_CONFIG")
    if config_path:
        try:
            loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_path}: top level must be a mapping")
        for key, raw in loaded.items():
            if key in known:
                values[key] = _coerce(key, raw, str(config_path))
            elif key in ("models", "rules", "notify"):
                extra[key] = raw
            else:
                raise ConfigError(f"{key} (from {config_path}): unknown setting")
    if "DRIFTLINE_BOOTSTRAP" in env:
        values["bootstrap_servers"] = env["DRIFTLINE_BOOTSTRAP"]
    for name in known:
        var = f"DRIFTLINE_{name.upper()}"
        if var in env:
            values[name] = _coerce(name, env[var], var)
    for name, raw in overrides.items():
        if name not in known:
            raise ConfigError(f"{name}: unknown setting")
        if raw is not None:
            values[name] = _coerce(name, raw, "command line")
    settings = replace(Settings(), **values, extra=extra)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(_LOG_LEVELS)}, got {s.log_level!r}")
    if not s.app_id:
        raise ConfigError("app_id: must not be empty")
    if s.bootstrap_servers:
        for part in s.bootstrap_servers.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(
                    f"bootstrap_servers: expected host:port[,host:port...], got {s.bootstrap_servers!r}"
                )
    if s.local_broker_port == s.local_controller_port:
        raise ConfigError("local_controller_port: must differ from local_broker_port")
    if not s.kafka_version.startswith(("3.", "4.")):
        raise ConfigError(f"kafka_version: expected a 3.x or 4.x release, got {s.kafka_version!r}")
