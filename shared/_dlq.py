"""Dead letters: decode a message or put it on ``ops.dlq.<origin>`` with the reason.

No consumer crashes on bad input: a handler calls ``decode`` and gets a model or ``None``; a
rejected message is published (JetStream, stream ``OPS_DLQ``) with its raw body, the validation
error and its headers, and counted in ``opsplane_dlq_messages_total``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from ._inbound import InboundMessage
from ._logging import get_logger
from ._models import DeadLetter
from ._subjects import dlq

log = get_logger(__name__)

MAX_DLQ_BODY = 64 * 1024
SECRET_HEADERS = {"authorization", "cookie", "x-api-key"}
M = TypeVar("M", bound=BaseModel)

DLQ_MESSAGES = Counter(
    "opsplane_dlq_messages_total", "Messages rejected to the dead-letter queue.", ["origin"]
)


class Publisher(Protocol):
    """What the DLQ needs from a broker: FastStream's ``NatsBroker.publish`` fits."""

    def publish(
        self, message: Any, subject: str, *, stream: str | None = None
    ) -> Awaitable[Any]: ...


def reason_of(exc: ValidationError) -> str:
    """A short, human reason: the first few errors with their locations."""
    parts = []
    for error in exc.errors()[:5]:
        loc = ".".join(str(p) for p in error["loc"]) or "<body>"
        parts.append(f"{loc}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class DeadLetters:
    def __init__(
        self, publisher: Publisher, *, on_error: Callable[[Exception], None] | None = None
    ):
        self._publisher = publisher
        self._on_error = on_error

    async def reject(
        self,
        origin: str,
        subject: str,
        body: bytes,
        reason: str,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        DLQ_MESSAGES.labels(origin=origin).inc()
        letter = DeadLetter(
            origin=origin,
            subject=subject,
            reason=reason[:8192],
            body=body[:MAX_DLQ_BODY].decode("utf-8", errors="replace"),
            truncated=len(body) > MAX_DLQ_BODY,
            headers={
                k: str(v) for k, v in (headers or {}).items() if k.lower() not in SECRET_HEADERS
            },
        )
        log.warning("dlq.rejected", origin=origin, subject=subject, reason=letter.reason[:300])
        try:
            await self._publisher.publish(letter.to_bytes(), dlq(origin), stream="OPS_DLQ")
        except Exception as exc:  # the DLQ itself must never take the consumer down
            log.error("dlq.publish_failed", origin=origin, error=str(exc))
            if self._on_error:
                self._on_error(exc)

    async def decode_message(self, model: type[M], origin: str, msg: InboundMessage) -> M | None:
        """``decode`` for a message received through ``subscribe_raw``."""
        return await self.decode(model, origin, msg.raw_message.subject, msg.body, msg.headers)

    async def decode(
        self,
        model: type[M],
        origin: str,
        subject: str,
        body: bytes,
        headers: Mapping[str, Any] | None = None,
    ) -> M | None:
        """``model`` parsed from ``body``, or ``None`` after rejecting it to the DLQ."""
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            await self.reject(origin, subject, body, reason_of(exc), headers)
            return None
