"""The super-admin status page in a real headless Chromium (Debian's ``chromium``, Playwright).

The page lists the components, shows a failing one as failing, and changes live (over
server-sent events, without a reload) when a dependency is stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from services.gateway.auth import token_hash
from tests.conftest import require_tool
from tests.harness import Servers, services
from tests.status.fakes import FakeMailgun

ADMIN = "browser-admin-token"
FAST = {"OPS_PROBE_INTERVAL": "0.5", "OPS_HEARTBEAT_INTERVAL": "0.5", "OPS_VIEW_REFRESH": "0.5"}


@pytest.fixture()
async def browser() -> AsyncIterator[Browser]:
    chromium = require_tool("chromium", "chromium")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, headless=True,
                                            args=["--no-sandbox", "--disable-gpu"])
        yield launched
        await launched.close()


async def test_status_page_shows_components_and_changes_live(
    browser: Browser, private_servers: Servers, logdir: Path, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.toml"
    auth.write_text(f'[[tokens]]\nsha256 = "{token_hash(ADMIN)}"\nrole = "super-admin"\n')
    mailgun = FakeMailgun(key="the-right-key").start()  # we present a wrong key: mailgun fails
    env = private_servers.env(**FAST, OPS_AUTH=str(auth), MAILGUN_API_BASE=mailgun.url,
                              MAILGUN_API_KEY="a-wrong-key", MAILGUN_DOMAIN=mailgun.domain)
    try:
        with services(["health", "aggregator", "gateway"], env, logdir) as procs:
            gateway = procs["gateway"]
            context = await browser.new_context(
                http_credentials={"username": "admin", "password": ADMIN})
            page = await context.new_page()
            response = await page.goto(gateway.base_url + "/super-admin/status")
            assert response is not None and response.status == 200

            rows = page.locator("#components tbody tr")
            for check in ("postgres", "s3", "nats", "mailgun", "websocket", "backups"):
                await expect(page.locator(f'#components tr[data-check="{check}"]')).to_have_count(
                    1, timeout=15_000)
            assert await rows.count() >= 8
            s3 = page.locator('#components tr[data-check="s3"]')
            await expect(s3).to_have_attribute("data-status", "pass", timeout=15_000)
            mailgun_row = page.locator('#components tr[data-check="mailgun"]')
            await expect(mailgun_row).to_have_attribute("data-status", "fail")
            await expect(mailgun_row).to_contain_text("rejected the API key")
            await expect(mailgun_row.locator(".badge.fail")).to_have_count(1)
            await expect(page.locator("#live")).to_have_attribute("data-state", "live")
            await expect(page.locator('#services tr[data-service="health"]')).to_have_attribute(
                "data-status", "pass", timeout=10_000)

            await page.evaluate("window.__noReload = 'still here'")
            private_servers.s3.stop()
            await expect(s3).to_have_attribute("data-status", "fail", timeout=15_000)
            await expect(s3).to_have_attribute("data-effective", "warn")
            await expect(s3.locator(".badge.fail")).to_have_count(1)
            assert await page.evaluate("window.__noReload") == "still here"
            assert await page.evaluate("document.body.dataset.status") == "warn"
            await context.close()
    finally:
        mailgun.stop()
