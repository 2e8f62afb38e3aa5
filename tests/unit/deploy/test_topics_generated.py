"""deploy/kubernetes/base/topics.yaml is what `driftline deploy topics` prints from streams/topics.py."""

from __future__ import annotations

import shlex
import sys

import pytest
import yaml

from streams.cli import build_parser, main
from streams.config import load_settings
from streams.deploy_cli import kafka_topics, render_topics, resource_name
from streams.topics import TOPICS, resolved
from tests.unit.deploy.helpers import K8S

COMMITTED = K8S / "base" / "topics.yaml"


def header_command() -> list[str]:
    """The command the committed file's header says made it."""
    line = COMMITTED.read_text().splitlines()[1]
    assert line.startswith("#   driftline deploy topics "), line
    return shlex.split(line.removeprefix("#   "))


def test_the_committed_file_is_a_fresh_generation(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Change streams/topics.py and this fails until the file is regenerated (the header's command)."""
    for var in ("DRIFTLINE_CONFIG", "DRIFTLINE_APP_ID", "DRIFTLINE_TOPIC_PREFIX", "DRIFTLINE_PARTITIONS",
                "DRIFTLINE_REPLICATION_FACTOR"):
        monkeypatch.delenv(var, raising=False)  # the header's arguments alone decide the output
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() trims sys.argv for faust: restore it after
    assert main(header_command()[1:]) == 0
    fresh = capsys.readouterr().out
    assert fresh == COMMITTED.read_text(), (
        "deploy/kubernetes/base/topics.yaml is stale: regenerate it with\n  "
        + shlex.join(header_command()) + " --out deploy/kubernetes/base/topics.yaml")


def test_every_topic_of_the_code_is_in_the_file_once() -> None:
    args = build_parser().parse_args(header_command()[1:])
    docs = list(yaml.safe_load_all(COMMITTED.read_text()))
    settings = load_settings(env={}, app_id=args.app_id, topic_prefix=args.prefix, partitions=args.partitions)
    assert [d["spec"]["topicName"] for d in docs] == [name for name, _, _ in resolved(settings)]
    assert len(docs) == len(TOPICS)
    by_name = {d["spec"]["topicName"]: d for d in docs}
    changelog = by_name[f"{args.app_id}-state-changelog"]  # faust's name for the state table's changelog
    assert changelog["spec"]["config"]["cleanup.policy"] == "compact"
    assert by_name[f"{args.prefix}profiles"]["spec"]["partitions"] == 1


def test_rendering_options_and_names() -> None:
    s = load_settings(env={}, app_id="Fraud_Worker", topic_prefix="Team_A.", partitions=12)
    docs = kafka_topics(s, cluster="prod-kafka", namespace=None, replicas=3)
    pred = docs[0]
    assert pred["metadata"]["name"] == "team-a.predictions"
    assert pred["spec"]["topicName"] == "Team_A.predictions"
    assert "namespace" not in pred["metadata"]
    assert pred["metadata"]["labels"]["strimzi.io/cluster"] == "prod-kafka"
    assert (pred["spec"]["partitions"], pred["spec"]["replicas"]) == (12, 3)
    assert all(isinstance(v, str) for d in docs for v in d["spec"]["config"].values())
    assert render_topics(s, "c").startswith("# GENERATED")
    with pytest.raises(ValueError, match="no valid Kubernetes name"):
        resource_name("___")
