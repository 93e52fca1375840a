"""The probe framework: config file, timeouts, crashes, the app's gauges and their DLQ."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faststream.nats import JStream, NatsBroker, TestNatsBroker

from services.health.config import DEFAULTS, HealthSettings, parse_probes, probe_configs
from services.health.gauges import GaugeBook, PoolProbe, WsConnectionsProbe
from services.health.main import backup_job_router, gauge_router
from services.health.probe import ProbeConfig, ProbeResult, probe_loop, run_once
from shared import (
    ConfigError,
    DeadLetters,
    HealthEvent,
    JobEvent,
    PoolGauge,
    Status,
    WsGauge,
    utcnow,
)


def settings(tmp_path: Path, toml: str | None = None, **env: str) -> HealthSettings:
    values: dict[str, object] = {}
    if toml is not None:
        path = tmp_path / "probes.toml"
        path.write_text(toml)
        values["OPS_PROBES"] = path
    if "interval" in env:
        values["OPS_PROBE_INTERVAL"] = env["interval"]
    return HealthSettings(**values)  # type: ignore[arg-type]


def test_defaults_cover_every_check_and_only_postgres_is_critical() -> None:
    assert set(DEFAULTS) == {
        "postgres", "postgres_connections", "postgres_pool", "s3", "mailgun", "websocket",
        "websocket_connections", "nats", "backups",
    }
    assert [name for name, c in DEFAULTS.items() if c.critical] == ["postgres"]
    assert (DEFAULTS["backups"].warn_at, DEFAULTS["backups"].fail_at) == (26, 50)


def test_toml_overrides_one_check_and_keeps_the_rest(tmp_path: Path) -> None:
    configs = probe_configs(settings(tmp_path, "[s3]\ncritical = true\ncanary = true\n"
                                               "interval_s = 30\n[mailgun]\nenabled = false\n"))
    assert configs["s3"].critical and configs["s3"].canary and configs["s3"].interval_s == 30
    assert configs["s3"].timeout_s == DEFAULTS["s3"].timeout_s
    assert not configs["mailgun"].enabled
    assert configs["postgres"] == DEFAULTS["postgres"]


def test_global_interval_knob_then_file(tmp_path: Path) -> None:
    configs = probe_configs(settings(tmp_path, "[backups]\ninterval_s = 60\n", interval="0.5"))
    assert configs["postgres"].interval_s == 0.5 and configs["backups"].interval_s == 60


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[postgress]\ncritical = false\n", "unknown check [postgress]"),
        ("[s3]\ncritcal = true\n", "critcal"),
        ("[s3]\ninterval_s = 'soon'\n", "interval_s"),
        ("[s3]\ninterval_s = 0\n", "greater than 0"),
        ("s3 = 5\n", "must be a table"),
        ("[s3\n", "OPS_PROBES"),
    ],
)
def test_a_bad_file_stops_start_up_with_the_reason(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        probe_configs(settings(tmp_path, toml))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        probe_configs(HealthSettings(OPS_PROBES=tmp_path / "nope.toml"))  # type: ignore[call-arg]


def test_parse_probes_validates_thresholds() -> None:
    parsed = parse_probes({"nats": {"warn_at": 50, "fail_at": 70}}, DEFAULTS)
    assert (parsed["nats"].warn_at, parsed["nats"].fail_at) == (50, 70)


class Hangs:
    check = component = "hang"
    measurement, component_type = "responseTime", "component"

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config

    async def run(self) -> ProbeResult:
        await asyncio.sleep(60)
        raise AssertionError("not reached")


class Crashes(Hangs):
    async def run(self) -> ProbeResult:
        raise RuntimeError("boom postgresql://u:topsecret@h/db")


async def test_a_hanging_probe_is_cut_at_its_timeout() -> None:
    event = await run_once(Hangs(ProbeConfig(timeout_s=0.2, critical=False, interval_s=7)), "i-1")
    assert event.status is Status.FAIL and event.output == "timed out after 0.2 s"
    assert event.latency_ms is not None and 190 < event.latency_ms < 600
    assert (event.critical, event.interval_s, event.instance) == (False, 7, "i-1")


async def test_a_crashing_probe_is_a_result_without_secrets() -> None:
    event = await run_once(Crashes(ProbeConfig()), "i")
    assert event.status is Status.FAIL and "RuntimeError: boom" in event.output
    assert "topsecret" not in event.output


# ---- the app's gauges -----------------------------------------------------------------------


def pool(node: str, in_use: int, size: int) -> PoolGauge:
    return PoolGauge(ts=utcnow(), node=node, in_use=in_use, max=size)


async def test_pool_gauge_skipped_then_summed_then_silent() -> None:
    book: GaugeBook[PoolGauge] = GaugeBook()
    probe = PoolProbe(book, ProbeConfig(interval_s=1, warn_at=80, fail_at=95))
    first = await probe.run()
    assert first.skipped and "ops.ingest.pool" in first.output
    book.apply(pool("a", 5, 10))
    book.apply(pool("b", 3, 10))
    # 8 of 20 in use: 40 %.
    assert (await probe.run()).status is Status.PASS
    book.apply(pool("a", 10, 10))
    book.apply(pool("b", 7, 10))
    result = await probe.run()
    assert (result.status, result.observed_value) == (Status.WARN, 85.0)
    book.apply(pool("b", 10, 10))
    assert (await probe.run()).status is Status.FAIL
    book.nodes = {k: (g, 0.0) for k, (g, _) in book.nodes.items()}  # every node went quiet
    silent = await probe.run()
    assert silent.status is Status.WARN and "no pool gauge" in silent.output


async def test_reordered_older_gauge_is_ignored() -> None:
    book: GaugeBook[PoolGauge] = GaugeBook()
    newer = pool("a", 9, 10)
    older = newer.model_copy(update={"in_use": 1, "ts": newer.ts.replace(year=2000)})
    book.apply(newer)
    book.apply(older)
    assert book.fresh(60)[0].in_use == 9


async def test_ws_connections_sum_over_nodes_with_optional_thresholds() -> None:
    book: GaugeBook[WsGauge] = GaugeBook()
    probe = WsConnectionsProbe(book, ProbeConfig(warn_at=100))
    assert (await probe.run()).skipped
    book.apply(WsGauge(ts=utcnow(), node="a", connections=40))
    book.apply(WsGauge(ts=utcnow(), node="b", connections=2))
    result = await probe.run()
    assert (result.status, result.observed_value, result.observed_unit) == (
        Status.PASS, 42.0, "connections")
    book.apply(WsGauge(ts=utcnow(), node="b", connections=60))
    assert (await probe.run()).status is Status.WARN


async def test_gauge_subscribers_fold_good_messages_and_dead_letter_bad_ones() -> None:
    broker = NatsBroker()
    pools: GaugeBook[PoolGauge] = GaugeBook()
    sockets: GaugeBook[WsGauge] = GaugeBook()
    broker.include_router(gauge_router(DeadLetters(broker), pools, sockets))
    letters: list[dict[str, object]] = []

    @broker.subscriber("ops.dlq.*", stream=JStream("OPS_DLQ", declare=False))
    async def on_dlq(body: dict[str, object]) -> None:
        letters.append(body)

    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish(b'{"ts": 1767225600, "node": "n1", "in_use": 3, "max": 10}',
                                  "ops.ingest.pool")
        await test_broker.publish(b'{"ts": 1767225600, "node": "n1", "connections": 7}',
                                  "ops.ingest.ws")
        await test_broker.publish(b'{"node": "n1", "in_use": -1, "max": 0}', "ops.ingest.pool")
        await test_broker.publish(b"not json", "ops.ingest.ws")
    assert pools.fresh(60)[0].in_use == 3
    assert sockets.fresh(60)[0].connections == 7
    assert len(letters) == 2
    assert [letter["origin"] for letter in letters] == ["pool", "ws"]
    assert "in_use" in str(letters[0]["reason"]) and letters[1]["body"] == "not json"


# ---- which probes the service builds ---------------------------------------------------------


async def probes_for(tmp_path: Path, **env: str) -> dict[str, ProbeResult]:
    """Run the built probes that do no I/O in this set-up (nothing configured)."""
    from services.health.main import build_probes

    values: dict[str, object] = {"DATABASE_URL": None, "MAILGUN_API_KEY": None, "WS_URL": None,
                                 "MAILGUN_DOMAIN": None, **env}
    built = build_probes(HealthSettings(**values), None, GaugeBook(), GaugeBook())  # type: ignore[arg-type]
    quiet = {"postgres", "mailgun", "websocket"}
    return {probe.check: await probe.run() for probe in built
            if probe.check in quiet or not probe.config.enabled}


async def test_unconfigured_optional_checks_skip_and_a_missing_database_fails(
    tmp_path: Path,
) -> None:
    results = await probes_for(tmp_path)
    assert results["postgres"].status is Status.FAIL
    assert results["postgres"].output == "DATABASE_URL not set"
    for name in ("mailgun", "websocket"):
        assert results[name].skipped and results[name].status is Status.PASS


async def test_a_disabled_check_keeps_reporting_as_skipped(tmp_path: Path) -> None:
    path = tmp_path / "probes.toml"
    path.write_text("[s3]\nenabled = false\n")
    results = await probes_for(tmp_path, OPS_PROBES=str(path))
    assert results["s3"].skipped and results["s3"].output == "skipped: disabled in OPS_PROBES"


# ---- the backups check re-runs when a backup job ends ----------------------------------------


class Counts:
    check, component, measurement, component_type = "backups", "backups", "age", "component"

    def __init__(self) -> None:
        self.config = ProbeConfig(interval_s=3600)
        self.runs = 0

    async def run(self) -> ProbeResult:
        self.runs += 1
        return ProbeResult(status=Status.PASS, output=f"run {self.runs}")


@pytest.mark.parametrize(
    ("action", "state", "reruns"),
    [("backup.create", "succeeded", True), ("backup.verify", "failed", True),
     ("backup.create", "running", False), ("db.report", "succeeded", False)],
)
async def test_a_finished_backup_job_reruns_the_backups_check_at_once(
    action: str, state: str, reruns: bool
) -> None:
    probe, published = Counts(), asyncio.Queue[HealthEvent]()
    wake = asyncio.Event()
    broker = NatsBroker()
    broker.include_router(backup_job_router(wake))
    async with TestNatsBroker(broker) as test_broker:
        loop = asyncio.create_task(probe_loop(probe, "i", published.put, wake))
        try:
            await asyncio.wait_for(published.get(), 5)  # the first run, at start
            event = JobEvent(job_id="j1", action=action, state=state)  # type: ignore[arg-type]
            await test_broker.publish(event.model_dump_json().encode(), "ops.jobs.j1")
            await test_broker.publish(b"{not json", "ops.jobs.j2")  # ignored, no crash
            if reruns:
                second = await asyncio.wait_for(published.get(), 5)
                assert second.output == "run 2"
            else:
                assert not wake.is_set() and probe.runs == 1  # hour-long interval still applies
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
