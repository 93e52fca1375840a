"""Fixtures of the status tests: a clean ``ops_status`` bucket for tests that read views.

Views are seeded from KV when an aggregator starts (so a restart never blanks them); tests on
the shared servers therefore start and end with the bucket purged, so no view leaks between them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.errors import NoKeysError, NotFoundError

from shared import ensure_jetstream, open_status_bucket
from tests.harness import Servers


async def purge_views(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await ensure_jetstream(js)
        kv = await open_status_bucket(js)
        try:
            keys = await kv.keys()
        except (NoKeysError, NotFoundError):
            keys = []
        for key in keys:
            await kv.purge(key)
    finally:
        await client.close()


@pytest.fixture()
async def fresh_views(servers: Servers) -> AsyncIterator[Servers]:
    await purge_views(servers.nats.url)
    yield servers
    await purge_views(servers.nats.url)
