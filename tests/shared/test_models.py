from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared import HealthEvent, RequestRecord, subjects

RECORD = {
    "ts": "2026-01-05T10:00:00Z",
    "tenant_id": "acme",
    "request_id": "r-1",
    "method": "GET",
    "route": "/api/projects",
    "status": 200,
    "duration_ms": 12.5,
}


def test_record_accepts_rfc3339_and_epoch_seconds_as_utc() -> None:
    a = RequestRecord.model_validate(RECORD)
    b = RequestRecord.model_validate({**RECORD, "ts": 1767607200})
    assert a.ts == b.ts == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    c = RequestRecord.model_validate({**RECORD, "ts": "2026-01-05T11:00:00+01:00"})
    assert c.ts == a.ts and c.ts.utcoffset() is not None


def test_schema_defaults_to_1_and_other_versions_are_refused() -> None:
    assert RequestRecord.model_validate(RECORD).schema_version == 1
    assert b'"schema":1' in RequestRecord.model_validate(RECORD).to_bytes()
    with pytest.raises(ValidationError):
        RequestRecord.model_validate({**RECORD, "schema": 2})


@pytest.mark.parametrize(
    "bad",
    [
        {"duration_ms": -1},
        {"status": 700},
        {"ts": "2026-01-05T10:00:00"},  # no offset: ambiguous, refused
        {"tenant_id": "acme.evil"},  # would split a subject
        {"surprise": 1},  # unknown field
        {"method": ""},
    ],
)
def test_bad_records_are_refused_with_a_reason(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        RequestRecord.model_validate({**RECORD, **bad})
    assert info.value.errors()


def test_health_event_round_trips() -> None:
    event = HealthEvent(check="postgres", component="postgres", status="fail", instance="h-1")
    again = HealthEvent.model_validate_json(event.to_bytes())
    assert again == event


@pytest.mark.parametrize("bad", ["a.b", "*", ">", "has space", ""])
def test_subject_tokens_refuse_separators_and_wildcards(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.health(bad)


def test_command_subjects_keep_the_dotted_action() -> None:
    assert subjects.command("backup.create") == "ops.cmd.backup.create"
    with pytest.raises(ValueError):
        subjects.command("backup.*")
