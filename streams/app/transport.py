"""An idempotent producer for faust.

faust-streaming enables ``enable_idempotence`` on its aiokafka producer only
inside transactions; Driftline's outputs (dead letters, metrics, alerts) must
not be duplicated by producer retries either, so every producer of the app
asks for idempotence with ``acks=all``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class IdempotentProducer(faust_aiokafka.Producer):  # type: ignore[misc]
    def _settings_extra(self) -> Mapping[str, Any]:
        return {"acks": "all", "enable_idempotence": True}
