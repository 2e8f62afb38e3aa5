"""The notifier service's settings in ``notify:``: the Alertmanager re-post window and ``max_in_flight``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streams.core.alerting.lifecycle import DEFAULT_REPEAT_INTERVAL_MS
from streams.notify import Notification
from streams.notify.config import DEFAULT_ALERTMANAGER_FIRING_TTL_MS, notify_config

from . import FIRING, RESOLVED


@pytest.fixture()
def alertmanager() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for ``POST /api/v2/alerts`` that keeps the posted alerts."""
    posted: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.extend(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posted
    finally:
        server.shutdown()
        server.server_close()


def _ms(rfc3339: str) -> int:
    return round(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def test_default_firing_ttl_is_the_repeat_interval_plus_a_grace() -> None:
    assert DEFAULT_ALERTMANAGER_FIRING_TTL_MS == DEFAULT_REPEAT_INTERVAL_MS + 15 * 60_000 == 15_300_000


@pytest.mark.parametrize(
    ("firing_ttl", "expected_ttl_ms"),
    [
        ("absent", 4 * 3_600_000 + 15 * 60_000),  # 4h15m: Alertmanager keeps it firing between repeats
        ("2h", 2 * 3_600_000),
        (900, 900_000),
        (None, None),  # explicit null: no endsAt, Alertmanager's resolve_timeout applies
    ],
    ids=["default", "duration", "seconds", "null"],
)
def test_a_firing_alert_is_posted_with_ends_at_now_plus_the_firing_ttl(
    alertmanager: tuple[str, list[dict[str, Any]]], firing_ttl: Any, expected_ttl_ms: int | None
) -> None:
    url, posted = alertmanager
    receiver: dict[str, Any] = {"type": "alertmanager", "url": url}
    if firing_ttl != "absent":
        receiver["firing_ttl"] = firing_ttl
    cfg = notify_config({"receivers": {"am": receiver}, "default_receiver": "am"})
    ch = cfg.channels["am"]
    before_ms = int(time.time() * 1000)
    ch.send(Notification.for_alert(FIRING, "am"))
    ch.send(Notification.for_alert(RESOLVED, "am"))
    after_ms = int(time.time() * 1000)
    ch.close()
    firing, resolved = posted
    if expected_ttl_ms is None:
        assert "endsAt" not in firing
    else:
        assert before_ms + expected_ttl_ms <= _ms(firing["endsAt"]) <= after_ms + expected_ttl_ms
    assert _ms(resolved["endsAt"]) == RESOLVED["ends_at_ms"]  # a resolve always ends it at its own time


@pytest.mark.parametrize("firing_ttl", ["0s", "soon", "-1h"])
def test_a_bad_firing_ttl_names_the_receiver(firing_ttl: str) -> None:
    with pytest.raises(ValueError, match="firing_ttl: expected a positive duration") as info:
        am = {"type": "alertmanager", "url": "http://am:9093", "firing_ttl": firing_ttl}
        notify_config({"receivers": {"am": am}, "default_receiver": "am"})
    assert str(info.value).startswith("notify.receivers.am")


@pytest.mark.parametrize(("raw", "expected"), [({}, 10_000), ({"max_in_flight": 50}, 50)],
                         ids=["default", "set"])
def test_max_in_flight(raw: dict[str, Any], expected: int) -> None:
    cfg = notify_config({"receivers": {"out": {"type": "stdout"}}, "default_receiver": "out", **raw})
    assert cfg.max_in_flight == expected


@pytest.mark.parametrize("value", [0, -5, 2.5, True, "many"])
def test_max_in_flight_must_be_a_positive_integer(value: Any) -> None:
    with pytest.raises(ValueError, match=r"notify\.max_in_flight: expected a positive integer, got "):
        notify_config({"receivers": {"out": {"type": "stdout"}}, "default_receiver": "out",
                       "max_in_flight": value})


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({}, (5.0, ("model",))),
        ({"group_wait": "0s"}, (0.0, ("model",))),
        ({"group_wait": "30s", "group_by": ["model", "severity"]}, (30.0, ("model", "severity"))),
    ],
)
def test_grouping_settings(raw: dict[str, Any], want: tuple[float, tuple[str, ...]]) -> None:
    cfg = notify_config({"receivers": {"console": {"type": "stdout"}}, "default_receiver": "console", **raw})
    assert (cfg.group_wait_s, cfg.group_by) == want


@pytest.mark.parametrize(
    ("raw", "match"),
    [({"group_wait": "-1s"}, "notify.group_wait"), ({"group_by": "model"}, "notify.group_by")],
)
def test_bad_grouping_settings_name_the_field(raw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        notify_config({"receivers": {"console": {"type": "stdout"}}, "default_receiver": "console", **raw})
