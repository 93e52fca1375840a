"""The aggregator's subscribers: fold health events and heartbeats into ``SystemState``.

Every subscriber takes the raw message (``subscribe_raw``) and decodes it itself, so a bad
message is sent to the DLQ with its reason instead of being terminated by FastStream's error path.
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsRouter

from shared import (
    DeadLetters,
    HealthEvent,
    Heartbeat,
    InboundMessage,
    subjects,
    subscribe_raw,
    utcnow,
)

from .state import SystemState


@dataclass
class Deps:
    state: SystemState
    dead_letters: DeadLetters


def build_router(deps: Deps) -> NatsRouter:
    router = NatsRouter()

    @subscribe_raw(router, subjects.HEALTH_ALL)
    async def on_health(msg: InboundMessage) -> None:
        event = await deps.dead_letters.decode_message(HealthEvent, "health", msg)
        if event is not None:
            deps.state.apply_health(event)

    @subscribe_raw(router, subjects.HEARTBEAT_ALL)
    async def on_heartbeat(msg: InboundMessage) -> None:
        beat = await deps.dead_letters.decode_message(Heartbeat, "heartbeat", msg)
        if beat is not None:
            deps.state.apply_heartbeat(beat, utcnow())

    return router
