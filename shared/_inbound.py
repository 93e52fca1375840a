"""Subscribers that take the raw message, so bad input reaches the DLQ instead of an error path.

FastStream 0.7 resolves a ``NatsMessage`` *context parameter* through fast_depends in a worker
thread: a thread hop per message that caps a subscriber near 1k messages/s. Handing the message
over as the handler's *body* (the ``raw_message`` decoder) costs nothing, and the handler decodes
it itself with ``DeadLetters.decode_message``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable  # FastStream checks a handler's parameter type with isinstance
class InboundMessage(Protocol):
    """What a handler reads of FastStream's ``NatsMessage``."""

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def raw_message(self) -> Any: ...  # nats-py's Msg: ``.subject``


async def raw_message(msg: Any) -> Any:
    """A FastStream decoder that hands the handler the message itself, undecoded."""
    return msg


def subscribe_raw(router: Any, subject: str, **kwargs: Any) -> Callable[[Any], Any]:
    """``router.subscriber(subject)`` whose handler receives the ``InboundMessage``."""
    return router.subscriber(subject, decoder=raw_message, **kwargs)  # type: ignore[no-any-return]
