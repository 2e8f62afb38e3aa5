"""The gated consumer against the real broker: a seek back over a hole re-reads it, in order.

faust's own seek does not: the rest of the batch fetched before the seek moves its read offset
past the records asked for again, and it drops them as already read (checked by hand with a
plain faust consumer: of the 25 records sought back, one came back).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.config import Settings

pytestmark = pytest.mark.integration

APP = Path(__file__).with_name("gate_app.py")


def test_a_hole_is_read_again_in_order_after_the_seek_back(settings: Settings, tmp_path: Path) -> None:
    topic = f"{settings.topic_prefix}gate-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    for i in range(300):
        producer.produce(topic, value=b"r%d" % i)
    producer.flush(30)
    out = tmp_path / "processed.json"
    proc = subprocess.run([sys.executable, str(APP), settings.bootstrap, topic, str(out), "100", "40", "299"],
                          capture_output=True, timeout=60, cwd=APP.parents[2])
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    processed = json.loads(out.read_text())
    # 0..99 (100 arrives where 40 is expected: a hole of 60), then 40..299 again, in order
    assert processed == list(range(100)) + list(range(40, 300))
