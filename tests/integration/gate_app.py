"""A minimal faust app with Driftline's gated consumer, run as a worker by ``test_consumer.py``.

``python gate_app.py BOOTSTRAP TOPIC OUT HOLE_AT BACK_TO``: consume TOPIC (one partition) in order
through an :class:`~streams.app.order.OffsetGate`; when offset HOLE_AT first arrives, the gate is
told to expect BACK_TO instead, as if faust had lost the records between. Exits once the last
record (the partition's end offset - 1) is processed, writing every processed offset to OUT.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any


def main(bootstrap: str, topic: str, out: str, hole_at: int, back_to: int, last: int) -> None:
    import faust

    from streams.app.consumer import GatedConsumer, use_gate
    from streams.app.order import OffsetGate, Verdict

    name = f"gate-{uuid.uuid4().hex[:8]}"
    app = faust.App(name, broker=f"kafka://{bootstrap}", web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_allow_declare=False,
                    datadir=os.path.join(os.path.dirname(os.path.abspath(out)), f"{name}-data"))
    app.transport.Consumer = GatedConsumer  # type: ignore[misc]
    gate = OffsetGate(frozenset({topic}))
    use_gate(app, gate)
    source = app.topic(topic, value_type=bytes, value_serializer="raw")
    processed: list[int] = []
    holed = False

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        nonlocal holed
        async for event in stream.events():
            msg = event.message
            if msg.offset == hole_at and not holed:
                holed = True
                gate.restart({(msg.topic, msg.partition): back_to}, time.monotonic() - 60)  # its seek is over
            verdict = gate.admit(msg.topic, msg.partition, msg.offset)
            if verdict is Verdict.NEXT:
                processed.append(msg.offset)
                gate.finish(msg.topic, msg.partition, msg.offset)
                if msg.offset == last:
                    with open(out, "w") as f:
                        json.dump(processed, f)
                    os._exit(0)
            elif verdict is Verdict.GAP:
                target = gate.seek_due(msg.topic, msg.partition, time.monotonic())
                if target is not None:
                    await app.consumer.seek(msg.tp, target)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    b, t, o, h, k, n = sys.argv[1:7]
    main(b, t, o, int(h), int(k), int(n))
