"""The aggregator's subscribers: fold health events and heartbeats into ``SystemState``.

Every subscriber takes the raw message and decodes it itself, so a bad message is sent to the
DLQ with its reason instead of being terminated by FastStream's error path.
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsMessage

from shared import DeadLetters, HealthEvent, Heartbeat, subjects, utcnow

from .state import SystemState


@dataclass
class Deps:
    state: SystemState
    dead_letters: DeadLetters


def build_router(deps: Deps) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(subjects.HEALTH_ALL)
    async def on_health(msg: NatsMessage) -> None:
        event = await deps.dead_letters.decode(
            HealthEvent, "health", msg.raw_message.subject, msg.body, msg.headers
        )
        if event is not None:
            deps.state.apply_health(event)

    @router.subscriber(subjects.HEARTBEAT_ALL)
    async def on_heartbeat(msg: NatsMessage) -> None:
        beat = await deps.dead_letters.decode(
            Heartbeat, "heartbeat", msg.raw_message.subject, msg.body, msg.headers
        )
        if beat is not None:
            deps.state.apply_heartbeat(beat, utcnow())

    return router
