"""``driftline deploy topics``: Strimzi ``KafkaTopic`` resources from :mod:`streams.topics`.

The topics are defined once, in ``streams/topics.py``; ``driftline topics
create`` applies them with an admin client, and this renders the same
definitions for clusters whose topics are owned by the Strimzi Topic
Operator. ``deploy/kubernetes/base/topics.yaml`` is this command's output
(the header says with which arguments) and a unit test regenerates it, so
the manifest cannot drift from the code.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from typing import Any

import yaml

from streams.config import Settings
from streams.topics import resolved

STRIMZI_API_VERSION = "kafka.strimzi.io/v1beta2"
_NAME_OK = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def resource_name(topic: str) -> str:
    """A Kubernetes object name (DNS-1123 subdomain) for ``topic``.

    Kafka allows ``_`` and upper case, Kubernetes does not; the real name is
    always in ``spec.topicName``, so the object name only has to be valid and
    distinct.

    >>> resource_name("driftline.predictions"), resource_name("Team_A.alerts")
    ('driftline.predictions', 'team-a.alerts')
    """
    name = re.sub(r"[^a-z0-9.-]", "-", topic.lower()).strip("-.")[:253].strip("-.")
    if not _NAME_OK.match(name):
        raise ValueError(f"topic {topic!r}: no valid Kubernetes name can be made from it")
    return name


def kafka_topics(settings: Settings, cluster: str, namespace: str | None = None,
                 replicas: int | None = None) -> list[dict[str, Any]]:
    """One ``KafkaTopic`` per topic of :data:`streams.topics.TOPICS`, under ``settings``' prefix and app id.

    ``cluster`` is the Strimzi ``Kafka`` resource (the ``strimzi.io/cluster``
    label the Topic Operator selects on); ``namespace`` the namespace that
    operator watches, which is usually the Kafka cluster's and not the
    application's.
    """
    docs: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for name, partitions, spec in resolved(settings):
        obj_name = resource_name(name)
        if obj_name in seen:
            raise ValueError(f"topics {seen[obj_name]!r} and {name!r} map to one resource name {obj_name!r}")
        seen[obj_name] = name
        metadata: dict[str, Any] = {"name": obj_name}
        if namespace:
            metadata["namespace"] = namespace
        metadata["labels"] = {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "driftline"}
        metadata["annotations"] = {"driftline.io/description": spec.description}
        docs.append({
            "apiVersion": STRIMZI_API_VERSION,
            "kind": "KafkaTopic",
            "metadata": metadata,
            "spec": {
                "topicName": name,
                "partitions": partitions,
                "replicas": replicas or settings.replication_factor,
                # Strings, as Kafka itself stores topic configs: no YAML number re-formatting.
                "config": dict(spec.kafka_config()),
            },
        })
    return docs


def render_topics(settings: Settings, cluster: str, namespace: str | None = None,
                  replicas: int | None = None, command: str | None = None) -> str:
    """The multi-document YAML of :func:`kafka_topics`, with a header naming the command that made it."""
    header = [
        "# GENERATED from streams/topics.py: do not edit. Regenerate with",
        f"#   {command}" if command else "#   driftline deploy topics ...",
        "# (tests/unit/deploy/test_topics_generated.py fails while this file and the code differ).",
    ]
    body = yaml.safe_dump_all(kafka_topics(settings, cluster, namespace, replicas), sort_keys=False,
                              default_flow_style=False, explicit_start=True, width=110)
    return "\n".join(header) + "\n" + body


def command_line(app_id: str, prefix: str, cluster: str, namespace: str | None, partitions: int,
                 replicas: int) -> str:
    """The ``driftline deploy topics`` invocation that reproduces a file (written into its header)."""
    args = ["driftline", "deploy", "topics", "--app-id", app_id, "--prefix", prefix, "--cluster", cluster]
    if namespace:
        args += ["--namespace", namespace]
    args += ["--partitions", str(partitions), "--replicas", str(replicas)]
    return shlex.join(args)


def cmd_deploy(args: Any, settings: Settings) -> int:
    """``driftline deploy topics``: print (or write with ``--out``) the KafkaTopic manifests."""
    s = replace(settings,
                app_id=args.app_id or settings.app_id,
                topic_prefix=settings.topic_prefix if args.prefix is None else args.prefix,
                partitions=args.partitions or settings.partitions)
    replicas = args.replicas or s.replication_factor
    if replicas < 1 or s.partitions < 1:
        raise ValueError("--partitions and --replicas must be at least 1")
    text = render_topics(s, args.cluster, args.namespace, replicas,
                         command_line(s.app_id, s.topic_prefix, args.cluster, args.namespace, s.partitions,
                                      replicas))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0
