import json
import logging

import pytest

from shared import Settings, configure_logging, get_logger, scrub


def test_scrub_removes_url_passwords() -> None:
    assert (
        scrub("postgresql://app:s3cret@db:5432/x failed") == "postgresql://app:***@db:5432/x failed"
    )
    assert scrub("nothing to hide") == "nothing to hide"


def test_log_lines_are_json_with_context_and_no_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("tester", instance="t-1")
    log = get_logger("t")
    log.info(
        "connect",
        dsn="postgresql://u:hunter2@h/db",
        api_key="abc",
        note="url postgresql://u:pw@h/db",
    )
    logging.getLogger("uvicorn.error").warning("plain stdlib line with postgresql://u:pw2@h/db")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    first, second = lines[-2], lines[-1]
    assert first["service"] == "tester" and first["instance"] == "t-1"
    assert first["dsn"] == "***" and first["api_key"] == "***"
    assert "pw@" not in first["note"]
    assert "pw2" not in second["event"] and second["service"] == "tester"
    assert "hunter2" not in json.dumps(lines)


def test_settings_never_print_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:topsecret@h/db")
    monkeypatch.setenv("MAILGUN_API_KEY", "key-123")
    settings = Settings()
    assert "topsecret" not in repr(settings) and "key-123" not in repr(settings)
    assert settings.database_dsn().endswith("@h/db")
