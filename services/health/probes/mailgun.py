"""Mailgun: the domains API says whether our sending domain is usable.

``GET {MAILGUN_API_BASE}/v3/domains/{domain}`` with basic auth ``api:KEY``: ``active`` passes,
``unverified`` warns (mail may be rejected or land in spam), ``disabled``, auth errors, an unknown
domain, server errors and timeouts fail. Not configured (no key or domain): ``skipped``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from shared import Status

from ..probe import ProbeConfig, ProbeResult, by_latency

DEFAULT_API_BASE = "https://api.mailgun.net"


@dataclass
class MailgunProbe:
    api_key: str
    domain: str
    api_base: str = DEFAULT_API_BASE
    config: ProbeConfig = field(default_factory=ProbeConfig)
    check: str = "mailgun"
    component: str = "mailgun"
    measurement: str = "responseTime"
    component_type: str = "component"

    @property
    def url(self) -> str:
        return f"{self.api_base.rstrip('/')}/v3/domains/{quote(self.domain, safe='')}"

    async def run(self) -> ProbeResult:
        timeout = httpx.Timeout(self.config.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            started = time.perf_counter()
            try:
                response = await client.get(self.url, auth=("api", self.api_key))
            except httpx.TimeoutException:
                return ProbeResult(status=Status.FAIL, output="Mailgun API timed out")
            except httpx.HTTPError as exc:
                return ProbeResult(
                    status=Status.FAIL, output=f"Mailgun API unreachable: {type(exc).__name__}"
                )
            latency_ms = (time.perf_counter() - started) * 1000
        return judge(response, self.domain, by_latency(latency_ms, self.config, "domains API"))


def judge(response: httpx.Response, domain: str, timing: ProbeResult) -> ProbeResult:
    code = response.status_code
    if code in (401, 403):
        return timing.model_copy(
            update={"status": Status.FAIL, "output": f"Mailgun rejected the API key (HTTP {code})"}
        )
    if code == 404:
        return timing.model_copy(
            update={"status": Status.FAIL, "output": f"domain {domain!r} not found in Mailgun"}
        )
    if code != 200:
        return timing.model_copy(
            update={"status": Status.FAIL, "output": f"Mailgun API answered HTTP {code}"}
        )
    try:
        state = response.json()["domain"]["state"]
    except (ValueError, KeyError, TypeError):
        return timing.model_copy(
            update={"status": Status.FAIL, "output": "unexpected answer from the Mailgun API"}
        )
    output = f"domain {domain} is {state}; {timing.output}"
    if state == "active":
        return timing.model_copy(update={"output": output})
    status = Status.WARN if state == "unverified" else Status.FAIL
    return timing.model_copy(update={"status": Status.worst([status, timing.status]),
                                     "output": output})
