"""The command consumer: a durable pull consumer on ``OPS_COMMANDS`` feeding ``Intake``.

Declared as ``COMMANDS_CONSUMER`` (registered in ``shared.CONSUMERS`` by the service, so
``ensure_jetstream`` creates it and checks its drift). One durable shared by every replica: the
work-queue stream hands each message to one of them. Messages are taken in batches and handled
one at a time, in order. Outcomes:

- accepted / rejected / duplicate: ack (the job row is durable from here on);
- retry (the database is away): nak with a delay growing with the delivery count, at most
  ``MAX_NAK_DELAY_S``; ``max_deliver`` is unlimited, so an outage never drops a command;
- an unexpected error: nak likewise, and after ``MAX_FAILED_DELIVERIES`` terminate the message
  (logged with its stream sequence) so one poisoned message cannot spin forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import COMMANDS_STREAM, CONSUMERS, ConsumerSpec, get_logger, subjects

from .intake import Inbound, Intake, Outcome

log = get_logger(__name__)

COMMANDS_CONSUMER = ConsumerSpec(
    stream=COMMANDS_STREAM,
    durable="maintenance",
    filter_subject=subjects.CMD_ALL,
    ack_wait_s=60.0,
    max_deliver=-1,
    max_ack_pending=100,
)
MAX_NAK_DELAY_S = 30.0
MAX_FAILED_DELIVERIES = 10


def register_consumer() -> None:
    """Add the worker's durable consumer to the declarations (idempotent)."""
    if COMMANDS_CONSUMER not in CONSUMERS:
        CONSUMERS.append(COMMANDS_CONSUMER)


def nak_delay(num_delivered: int) -> float:
    return float(min(2 ** max(num_delivered - 1, 0), MAX_NAK_DELAY_S))


def inbound(msg: Msg) -> Inbound:
    try:
        meta = msg.metadata
        seq, delivered = meta.sequence.stream, meta.num_delivered
    except Exception:  # not a JetStream message
        seq, delivered = None, 1
    return Inbound(subject=msg.subject, data=msg.data or b"", stream_seq=seq,
                   num_delivered=delivered)


async def process(msg: Msg, intake: Intake) -> Outcome | None:
    """Handle one message and settle it with the broker; never raises."""
    message = inbound(msg)
    try:
        outcome: Outcome | None = await intake.handle(message)
    except Exception:
        log.exception("command.intake_crashed", subject=message.subject,
                      stream_seq=message.stream_seq, deliveries=message.num_delivered)
        outcome = None
    try:
        if outcome is not None and not outcome.retry:
            await msg.ack()
        elif outcome is None and message.num_delivered >= MAX_FAILED_DELIVERIES:
            log.error("command.terminated", subject=message.subject,
                      stream_seq=message.stream_seq, deliveries=message.num_delivered)
            await msg.term()
        else:
            await msg.nak(delay=nak_delay(message.num_delivered))
    except Exception as exc:  # the broker will redeliver after ack_wait
        log.warning("command.settle_failed", stream_seq=message.stream_seq, error=str(exc))
    return outcome


async def consume(
    js: Callable[[], JetStreamContext],
    intake: Callable[[], Intake],
    ready: asyncio.Event,
    *,
    batch: int = 10,
    fetch_timeout_s: float = 5.0,
    on_outcome: Callable[[Outcome | None], Any] | None = None,
) -> None:
    """The intake loop: waits until the database is ready, then pulls forever."""
    await ready.wait()
    spec = COMMANDS_CONSUMER
    sub: Any = None
    try:
        while True:
            try:
                if sub is None:
                    sub = await js().pull_subscribe_bind(spec.durable, stream=spec.stream)
                msgs = await sub.fetch(batch, timeout=fetch_timeout_s)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("command.fetch_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                outcome = await process(msg, intake())
                if on_outcome is not None:
                    on_outcome(outcome)
                if outcome is not None and outcome.retry:
                    await asyncio.sleep(1.0)  # the database is away: don't spin through the batch
    finally:
        # A pull subscription left behind holds the connection's drain at shutdown until
        # nats-py's drain timeout (30 s): the worker looked hung on SIGTERM.
        if sub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.unsubscribe(), timeout=2)
