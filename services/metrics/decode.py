"""Fast decoding of request batches with the contract's validation rules.

``shared.RequestRecord`` (pydantic) is the contract; ``Record`` mirrors it as a msgspec struct
(about 3x faster, and the hot path of the service): unknown fields rejected, ``schema`` 1 only,
``ts`` RFC 3339 with an offset or epoch seconds, ``tenant_id`` an identifier, ``status``
100-599, ``duration_ms`` >= 0. ``tests/metrics/test_decode.py`` checks both agree. Where
pydantic's lax mode would coerce (``"200"`` or ``200.0`` as a status, numbers in strings), this
decoder is strict and rejects: it never accepts what the contract rejects.

A batch is a JSON array (or one object). The whole batch decodes in one call; only when that
fails is it taken apart record by record, so good records of a batch are kept and only the bad
ones go to the DLQ with their reasons.

The hot path decodes into ``Record``, which checks everything but the ``tenant_id`` pattern:
msgspec matches a pattern with a regex call per record, half the cost of decoding a batch. A
batch carries few tenants (one on partitioned ingest), so the distinct ids are checked once
each; a batch with a bad one is decoded again the strict way (``StrictRecord``, the pattern in
the schema), which gives the same records, rejections and reasons as before. Records are not
tracked by the garbage collector (``gc=False``: strings and numbers only, no cycles).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH_RECORDS = 10_000

IDENTIFIER = r"^[A-Za-z0-9_\-]+$"
Identifier = Annotated[str, Meta(min_length=1, max_length=128, pattern=IDENTIFIER)]
AwareTime = Annotated[datetime, Meta(tz=True)]
_is_identifier = re.compile(IDENTIFIER).search  # as msgspec matches a pattern: re.search


class Record(Struct, forbid_unknown_fields=True, gc=False):
    """A request record; ``decode_batch`` checks its ``tenant_id`` is an ``Identifier``."""

    ts: float | AwareTime
    method: Annotated[str, Meta(min_length=1, max_length=16)]
    route: Annotated[str, Meta(min_length=1, max_length=256)]
    status: Annotated[int, Meta(ge=100, le=599)]
    duration_ms: Annotated[float, Meta(ge=0)]
    tenant_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    request_id: Annotated[str, Meta(max_length=128)] | None = None
    schema: Literal[1] = 1


class StrictRecord(Record, forbid_unknown_fields=True, gc=False):
    """``Record`` with the ``tenant_id`` pattern in the schema: the contract, record by record."""

    tenant_id: Identifier | None = None


_batch = msgspec.json.Decoder(list[Record] | Record)
_strict_batch = msgspec.json.Decoder(list[StrictRecord] | StrictRecord)
_strict_one = msgspec.json.Decoder(StrictRecord)
_raw_items = msgspec.json.Decoder(list[msgspec.Raw])
_tenant_of = attrgetter("tenant_id")
_good_tenants: set[str | None] = {None}  # tenant ids known to match ``IDENTIFIER``
MAX_GOOD_TENANTS = 100_000


@dataclass
class Rejected:
    kind: str  # bounded: invalid | timestamp | duration | not_json | oversized
    reason: str
    raw: bytes
    index: int | None = None


@dataclass
class Decoded:
    records: list[Record] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # Each record's index in the batch, when some were rejected (else it is the position).
    indices: list[int] | None = None

    def index_of(self, position: int) -> int:
        return position if self.indices is None else self.indices[position]


def decode_batch(body: bytes) -> Decoded:
    """Good records and rejected ones; a message that is not a batch at all is one rejection."""
    if len(body) > MAX_BODY_BYTES:
        return Decoded(rejected=[_whole("oversized", f"message of {len(body)} bytes", body)])
    try:
        value = _batch.decode(body)
    except msgspec.ValidationError:
        return _strict(body)  # the reasons as the contract's schema gives them
    except msgspec.DecodeError as exc:
        return Decoded(rejected=[_whole("not_json", f"not JSON: {exc}", body)])
    records = [value] if isinstance(value, Record) else value
    if not _tenants_ok({*map(_tenant_of, records)}):
        return _strict(body)
    if isinstance(value, Record):
        return Decoded(records=[value])
    if len(value) > MAX_BATCH_RECORDS:
        reason = f"batch of {len(value)} records (max {MAX_BATCH_RECORDS})"
        return Decoded(rejected=[_whole("oversized", reason, body)])
    return Decoded(records=value)


def _tenants_ok(tenants: set[str | None]) -> bool:
    """Every id an ``Identifier`` (or None); ids seen good before are not matched again."""
    unknown = tenants - _good_tenants
    if not unknown:
        return True
    for tenant in unknown:
        if tenant is not None and not _is_identifier(tenant):
            return False
    if len(_good_tenants) > MAX_GOOD_TENANTS:  # bounded whatever ids arrive
        _good_tenants.clear()
        _good_tenants.add(None)
    _good_tenants.update(unknown)
    return True


def _strict(body: bytes) -> Decoded:
    """A batch ``Record`` rejected or with a bad tenant id: the contract's schema
    (``StrictRecord``) gives the reason, then the records are taken one by one."""
    try:
        _strict_batch.decode(body)
        reason = "invalid batch"  # not reached: the stricter schema accepts no more
    except msgspec.ValidationError as exc:
        reason = str(exc)
    return _one_by_one(body, reason)


def _one_by_one(body: bytes, whole_reason: str) -> Decoded:
    try:
        items = _raw_items.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        # One object, or not an array of objects: the message as a whole is invalid.
        return Decoded(rejected=[_whole("invalid", whole_reason, body)])
    if len(items) > MAX_BATCH_RECORDS:
        reason = f"batch of {len(items)} records (max {MAX_BATCH_RECORDS})"
        return Decoded(rejected=[_whole("oversized", reason, body)])
    out = Decoded(indices=[])
    for index, raw in enumerate(items):
        try:
            out.records.append(_strict_one.decode(raw))
            out.indices.append(index)  # type: ignore[union-attr]
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            out.rejected.append(Rejected("invalid", str(exc), bytes(raw), index))
    return out


def _whole(kind: str, reason: str, body: bytes) -> Rejected:
    return Rejected(kind, reason, body)


def encode_record(record: Record) -> bytes:
    return msgspec.json.encode(record)
