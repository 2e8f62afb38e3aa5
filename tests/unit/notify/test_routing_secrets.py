"""Routing table (order, continue, default, anchored regexes, precise errors) and secrets that never leak."""

from __future__ import annotations

import copy
import dataclasses
import logging
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from streams.notify import (
    AlertmanagerChannel,
    DeliveryError,
    Notification,
    RetryPolicy,
    Route,
    RoutingTable,
    Secret,
    SlackChannel,
    WebhookChannel,
    alert_labels,
    deliver_with_retry,
    parse_routing,
    resolve_secret,
)

from . import FIRING

CONFIG = """
notify:
  default_receiver: ops-email
  routes:
    - receiver: risk-slack
      match: {team: risk}
      match_re: {model: "fraud-.*"}
      continue: true
    - receiver: pager
      match: {severity: critical}
    - receiver: ml-webhook
      match_re: {alertname: ".*drift.*"}
"""


@pytest.fixture
def table() -> RoutingTable:
    return parse_routing(yaml.safe_load(CONFIG)["notify"],
                         receivers={"ops-email", "risk-slack", "pager", "ml-webhook"})


# -- routing --------------------------------------------------------------------------------------------
def test_routes_in_order_with_continue_and_default(table: RoutingTable) -> None:
    assert table.default_receiver == "ops-email"
    assert [r.receiver for r in table.routes] == ["risk-slack", "pager", "ml-webhook"]
    # risk-slack continues; pager matches and stops, so ml-webhook is not reached
    assert table.routes_for({"team": "risk", "model": "fraud-eu", "severity": "critical",
                             "alertname": "feature_drift_psi"}) == ["risk-slack", "pager"]
    # risk-slack continues, pager does not match, ml-webhook does
    assert table.routes_for({"team": "risk", "model": "fraud-eu", "severity": "warning",
                             "alertname": "feature_drift_psi"}) == ["risk-slack", "ml-webhook"]
    # first match without continue wins
    assert table.routes_for({"severity": "critical", "alertname": "feature_drift_psi"}) == ["pager"]
    # nothing matches: the default receiver
    other = {"team": "search", "severity": "info", "alertname": "p95_latency"}
    assert table.routes_for(other) == ["ops-email"]
    # only a continuing route matched: its receiver only, not the default (as Alertmanager)
    assert table.routes_for({"team": "risk", "model": "fraud-eu", "alertname": "p95"}) == ["risk-slack"]


def test_routing_on_an_alert_events_labels(table: RoutingTable) -> None:
    labels = alert_labels({**FIRING, "model": "fraud-detector"})
    assert labels == {"team": "risk", "env": "prod", "alertname": "feature_drift_psi",
                      "model": "fraud-detector", "model_version": "2026-01-01.3", "severity": "warning"}
    assert table.routes_for(labels) == ["risk-slack", "ml-webhook"]


def test_regexes_are_anchored_and_missing_labels_read_as_empty() -> None:
    r = Route("x", match_re={"model": "fraud-.*"})
    assert r.matches({"model": "fraud-eu"}) and not r.matches({"model": "old-fraud-eu"})
    assert not r.matches({"model": "fraud"}) and not r.matches({})
    anything = Route("x", match_re={"env": ".*"})
    assert anything.matches({}) and anything.matches({"env": "prod"})
    absent = Route("x", match={"env": ""})
    assert absent.matches({}) and not absent.matches({"env": "prod"})
    alternation = Route("x", match_re={"env": "prod|staging"})
    assert alternation.matches({"env": "staging"}) and not alternation.matches({"env": "production"})


def test_same_receiver_twice_is_delivered_once() -> None:
    t = RoutingTable((Route("a", continue_=True), Route("a")), default_receiver="d")
    assert t.routes_for({}) == ["a"]
    assert t.receivers() == {"a", "d"}


def test_no_routes_means_everything_goes_to_the_default() -> None:
    t = parse_routing({"default_receiver": "ops"})
    assert t.routes == () and t.routes_for({"anything": "x"}) == ["ops"]


@pytest.mark.parametrize(("raw", "message"), [
    ({"default_receiver": "ops",
      "routes": [{"receiver": "ops"}, {"receiver": "slack", "match_re": {"model": "fraud-("}}]},
     r"^notify\.routes\[1\]\.match_re\.model: bad regex 'fraud-\(' \(missing \), unterminated subpattern"),
    ({"routes": []}, r"^notify\.default_receiver: required"),
    ({"default_receiver": "ops", "routes": [{"match": {"team": "risk"}}]},
     r"^notify\.routes\[0\]\.receiver: required"),
    ({"default_receiver": "ops", "routes": [{"receiver": "slak"}]},
     r"^notify\.routes\[0\]\.receiver: unknown receiver 'slak' \(configured: ops, slack\)"),
    ({"default_receiver": "nope"}, r"^notify\.default_receiver: unknown receiver 'nope'"),
    ({"default_receiver": "ops", "routes": [{"receiver": "ops", "matchers": {}}]},
     r"^notify\.routes\[0\]\.matchers: unknown key"),
    ({"default_receiver": "ops", "routes": [{"receiver": "ops", "continue": "yes"}]},
     r"^notify\.routes\[0\]\.continue: expected true or false"),
    ({"default_receiver": "ops", "routes": [{"receiver": "ops", "match": {"code": 500}}]},
     r"^notify\.routes\[0\]\.match\.code: expected a string, got int \(quote it in YAML\)"),
    ({"default_receiver": "ops", "routes": [{"receiver": "ops", "match": ["team"]}]},
     r"^notify\.routes\[0\]\.match: expected a mapping"),
    ({"default_receiver": "ops", "routes": {"receiver": "ops"}}, r"^notify\.routes: expected a list"),
    ({"default_receiver": "ops", "routes": ["ops"]}, r"^notify\.routes\[0\]: expected a mapping"),
])
def test_parse_errors_name_the_field(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_routing(raw, receivers={"ops", "slack"})


def test_parse_errors_use_the_given_path() -> None:
    with pytest.raises(ValueError, match=r"^config\.yaml:notify\.routes\[0\]\.match_re\.env: bad regex"):
        parse_routing({"default_receiver": "ops", "routes": [{"receiver": "ops", "match_re": {"env": "["}}]},
                      where="config.yaml:notify")


def test_route_is_immutable_and_validates_directly() -> None:
    r = Route("x", match={"a": "b"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.receiver = "y"  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"^receiver: must not be empty"):
        Route("")
    with pytest.raises(ValueError, match=r"^match_re\.model: bad regex"):
        Route("x", match_re={"model": "*"})


# -- secrets --------------------------------------------------------------------------------------------
SECRET = "s3cr3t-Value-91f2"


def test_secret_never_shows_its_value() -> None:
    s = Secret(SECRET)
    assert repr(s) == str(s) == f"{s}" == f"{s!r}" == f"{s:>3}" == "***"
    assert s.reveal() == SECRET

    @dataclasses.dataclass
    class Cfg:
        url: str
        token: Secret

    cfg = Cfg("https://example", s)
    assert SECRET not in repr(cfg) and SECRET not in str(cfg) and SECRET not in f"{[cfg]} {({'k': s})}"
    assert SECRET not in "%s %r" % (s, s)  # noqa: UP031 -- the logging style of formatting
    with pytest.raises(TypeError, match="refusing to pickle"):
        pickle.dumps(s)
    assert copy.deepcopy(cfg).token is s and copy.copy(s) is s
    assert Secret(SECRET) == s and Secret("other") != s and hash(Secret(SECRET)) == hash(s)
    assert bool(s) and not Secret("")


def test_resolve_env_file_and_literal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_secret("env:HOOK_KEY", "f", env={"HOOK_KEY": SECRET}).reveal() == SECRET
    f = tmp_path / "key"
    f.write_text(SECRET + "\n")
    assert resolve_secret(f"file:{f}", "f").reveal() == SECRET  # one trailing newline stripped
    f.write_text(SECRET + "\n\n")
    assert resolve_secret(f"file:{f}", "f").reveal() == SECRET + "\n"  # only one
    f.write_text(SECRET + "\r\n")
    assert resolve_secret(f"file:{f}", "f").reveal() == SECRET
    with caplog.at_level(logging.WARNING):
        assert resolve_secret(SECRET, "notify.receivers.ops.secret").reveal() == SECRET
        assert resolve_secret("literal:env:NOT_A_VAR", "f").reveal() == "env:NOT_A_VAR"
    assert "notify.receivers.ops.secret: secret given literally" in caplog.text
    assert SECRET not in caplog.text
    s = Secret(SECRET)
    assert resolve_secret(s, "f") is s


def test_resolve_errors_name_the_field_and_never_the_value(tmp_path: Path) -> None:
    field = "notify.receivers.ops.password"
    cases = [
        ("env:SMTP_PASSWORD", f"{field}: environment variable SMTP_PASSWORD is not set", {}),
        ("env:SMTP_PASSWORD", f"{field}: environment variable SMTP_PASSWORD is empty", {"SMTP_PASSWORD": ""}),
        ("env:", f"{field}: env: needs a variable name", {}),
        (f"file:{tmp_path}/missing",
         f"{field}: cannot read secret file {tmp_path}/missing: No such file", {}),
        ("file:", f"{field}: file: needs a path", {}),
        ("", f"{field}: must not be empty", {}),
        (123456, f"{field}: expected env:NAME, file:/path or a string, got int", {}),
    ]
    for ref, message, env in cases:
        with pytest.raises(ValueError) as info:
            resolve_secret(ref, field, env=env)
        assert str(info.value).startswith(message), (ref, str(info.value))
        assert "123456" not in str(info.value)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=f"{field}: secret file .*empty is empty"):
        resolve_secret(f"file:{empty}", field)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + SECRET.encode())
    with pytest.raises(ValueError) as info:
        resolve_secret(f"file:{binary}", field)
    assert "not UTF-8" in str(info.value) and SECRET not in str(info.value)


def fake_time() -> tuple[Callable[[float], None], Callable[[], float]]:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return sleep, lambda: now[0]


def test_an_error_body_echoing_the_request_is_redacted() -> None:
    token, url_token = "bearer-" + SECRET, "P4TH-T0KEN"

    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers["Authorization"]
        return httpx.Response(400, text=f"bad request to {request.url} with {auth}")

    ch = AlertmanagerChannel("am", Secret(f"https://am.example/{url_token}"), bearer_token=Secret(token),
                             transport=httpx.MockTransport(echo))
    with pytest.raises(DeliveryError) as info:
        ch.send(Notification.for_alert(FIRING, "am"))
    ch.close()
    assert "HTTP 400 bad request to ***" in info.value.reason
    assert token not in info.value.reason and url_token not in info.value.reason


def test_secrets_stay_out_of_delivery_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The Slack URL token, the HMAC key and a bearer token never reach a reason, a repr or a log line."""
    token = "T0KEN-IN-PATH-abc123"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="unavailable")

    caplog.set_level(logging.DEBUG)
    slack = SlackChannel("s", Secret(f"https://hooks.slack.example/services/{token}"),
                         transport=httpx.MockTransport(refuse))
    hook = WebhookChannel("w", Secret(f"https://hooks.example/{token}"), secret=Secret(SECRET),
                          headers={}, transport=httpx.MockTransport(fail))
    for ch in (slack, hook):
        n = Notification.for_alert(FIRING, ch.name)
        with pytest.raises(DeliveryError) as info:
            ch.send(n)
        texts = [info.value.reason, str(info.value), repr(info.value)]
        sleep, clock = fake_time()
        result = deliver_with_retry(ch, n, RetryPolicy(max_elapsed_ms=5_000), sleep, clock, random.Random(0))
        assert not result.delivered and result.attempts > 1
        texts += [result.reason, repr(result)]
        for text in texts:
            assert token not in text and SECRET not in text, text
        ch.close()
    assert "hooks.example" not in caplog.text or token not in caplog.text
    assert token not in caplog.text and SECRET not in caplog.text
    assert "retrying" in caplog.text  # something was logged, just not the secrets
