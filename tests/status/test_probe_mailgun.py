"""The Mailgun probe against a local fake of the domains API: every state and failure."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from services.health.probe import ProbeConfig, run_once
from services.health.probes.mailgun import MailgunProbe
from shared import Status
from tests.status.fakes import FakeMailgun, blackhole

FAST = ProbeConfig(interval_s=1, timeout_s=1)


@pytest.fixture()
def mailgun() -> Iterator[FakeMailgun]:
    fake = FakeMailgun(key="key-right", domain="mg.example.test").start()
    yield fake
    fake.stop()


def probe(fake: FakeMailgun, *, key: str = "key-right", domain: str = "mg.example.test",
          config: ProbeConfig = FAST) -> MailgunProbe:
    return MailgunProbe(key, domain, fake.url, config)


@pytest.mark.parametrize(
    ("state", "expected"),
    [("active", Status.PASS), ("unverified", Status.WARN), ("disabled", Status.FAIL)],
)
async def test_domain_state_decides(mailgun: FakeMailgun, state: str, expected: Status) -> None:
    mailgun.state.domains["mg.example.test"] = state
    event = await run_once(probe(mailgun), "t")
    assert event.status is expected, event.output
    assert f"domain mg.example.test is {state}" in event.output
    assert event.observed_unit == "ms"


async def test_wrong_key_fails_and_never_shows_the_key(mailgun: FakeMailgun) -> None:
    event = await run_once(probe(mailgun, key="key-wrong"), "t")
    assert event.status is Status.FAIL
    assert event.output == "Mailgun rejected the API key (HTTP 401)"
    assert "key-wrong" not in event.model_dump_json()


async def test_unknown_domain_fails(mailgun: FakeMailgun) -> None:
    event = await run_once(probe(mailgun, domain="other.example.test"), "t")
    assert event.status is Status.FAIL and "not found" in event.output


async def test_slow_api_times_out(mailgun: FakeMailgun) -> None:
    mailgun.state.delay_s = 2.0
    event = await run_once(probe(mailgun, config=ProbeConfig(timeout_s=0.3)), "t")
    assert event.status is Status.FAIL
    assert "timed out" in event.output


async def test_down_fails() -> None:
    with blackhole() as port:
        pass
    event = await run_once(MailgunProbe("k", "d", f"http://127.0.0.1:{port}", FAST), "t")
    assert event.status is Status.FAIL and "unreachable" in event.output


async def test_control_endpoint_changes_state_live(mailgun: FakeMailgun) -> None:
    httpx.post(mailgun.url + "/_control", json={"state": "unverified"})
    assert (await run_once(probe(mailgun), "t")).status is Status.WARN
