"""The maintenance worker: runs signed commands as jobs (docs/maintenance.md).

Subscribes: ``ops.cmd.>`` through the durable pull consumer ``maintenance`` on the work-queue
stream ``OPS_COMMANDS`` (each command reaches one replica).
Publishes: ``JobEvent`` on ``ops.jobs.<job_id>`` (JetStream ``OPS_EVENTS``): queued, running
with throttled progress, then succeeded / failed / cancelled with result or error; rejected
commands as ``rejected`` with the reason. ``ops.heartbeat.maintenance.<instance>``.
State: schema ``ops`` (migrated at start-up, advisory-locked): ``ops.jobs``,
``ops.command_audit`` (append-only), ``ops.command_replay``. Any number of replicas: a job is
claimed by one conditional UPDATE; destructive jobs share one advisory lock.
Scheduler: the entries of ``OPS_SCHEDULE`` (or the built-in defaults) run as jobs, each fire
once across every replica (docs/schedule.md); a bad schedule file runs nothing on a clock but
never stops the worker from serving signed commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from faststream.asgi import AsgiFastStream
from pydantic import Field

from shared import (
    ACTIONS,
    DESTRUCTIVE_ACTIONS,
    ConfigError,
    OpsplaneError,
    ServiceRuntime,
    Settings,
    connect,
    create_pool,
    get_logger,
    make_broker,
    migrate,
    utcnow,
)

from .actions import CONTROL_ACTIONS, ActionHandler, default_handlers
from .handlers import consume, register_consumer
from .intake import Intake, fetch_identity
from .jobs import JobStore, js_publisher
from .keys import KeyringSource
from .runner import Runner, RunnerConfig
from .schedule_config import Schedule, load_schedule
from .scheduler import CONFIG_VALID, ENTRIES, Clock, CronScheduler, Sleep

SERVICE = "maintenance"
log = get_logger(__name__)


class MaintenanceSettings(Settings):
    concurrency: int = Field(default=2, ge=1, le=64, alias="OPS_MAINTENANCE_CONCURRENCY")
    job_lease_s: float = Field(default=60.0, gt=0, alias="OPS_JOB_LEASE")
    job_renew_s: float = Field(default=2.0, gt=0, alias="OPS_JOB_RENEW")
    progress_interval_s: float = Field(default=0.25, ge=0, alias="OPS_JOB_PROGRESS_INTERVAL")
    cancel_grace_s: float = Field(default=10.0, ge=0, alias="OPS_JOB_CANCEL_GRACE")


@dataclass
class Worker:
    """The wired worker; its database half comes up in the background (``start_database``)."""

    settings: MaintenanceSettings
    runtime: ServiceRuntime
    keys: KeyringSource
    handlers: dict[str, ActionHandler]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pool: asyncpg.Pool | None = None
    store: JobStore | None = None
    runner: Runner | None = None
    intake: Intake | None = None
    db_problem: str = "starting"
    schedule: Schedule | None = None  # None: the schedule file is invalid (schedule_problem)
    schedule_problem: str = ""
    scheduler: CronScheduler | None = None
    clock: Clock = utcnow
    sleep: Sleep = asyncio.sleep

    def guards(self) -> dict[str, bool]:
        s = self.settings
        return {
            "purge_app_data_allowed": s.purge_app_data_allowed,
            "backup_restore_allowed": s.backup_restore_allowed,
            "backfill_tenant_ids_allowed": s.backfill_tenant_ids_allowed,
        }

    @asynccontextmanager
    async def dedicated(self) -> AsyncIterator[asyncpg.Connection]:
        async with connect(self.settings.database_dsn(), timeout_s=10,
                           application_name="opsplane-maintenance") as conn:
            yield conn

    async def start_database(self) -> None:
        """Pool, migrations, identity, recovery; retried until the database answers."""
        if self.settings.database_url is None:
            self.db_problem = "DATABASE_URL not set: no command is taken off the stream"
            log.error("maintenance.no_database", problem=self.db_problem)
            return
        delay = 1.0
        while True:
            try:
                await self._open()
                break
            except OpsplaneError as exc:
                self.db_problem = str(exc)
                log.warning("maintenance.database_unavailable", error=str(exc), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
        self.db_problem = ""
        self.ready.set()
        log.info("maintenance.ready", handlers=sorted(self.handlers))

    async def _open(self) -> None:
        dsn = self.settings.database_dsn()
        async with connect(dsn, timeout_s=10, application_name="opsplane-migrate") as conn:
            applied = await migrate(conn)
        if applied:
            log.info("maintenance.migrated", versions=applied)
        if self.pool is None:
            self.pool = await create_pool(dsn, min_size=1, max_size=self.settings.concurrency + 4,
                                          application_name="opsplane-maintenance")
        pool = self.pool
        identity = await fetch_identity(pool)
        runtime = self.runtime
        self.store = JobStore(pool, js_publisher(lambda: runtime.client.jetstream()),
                              worker=self.settings.instance)
        s = self.settings
        self.runner = Runner(
            self.store, self.handlers, ACTIONS, pool=pool, connect=self.dedicated,
            destructive=DESTRUCTIVE_ACTIONS, control=CONTROL_ACTIONS,
            config=RunnerConfig(concurrency=s.concurrency,
                                progress_interval_s=s.progress_interval_s,
                                lease_s=s.job_lease_s, renew_every_s=s.job_renew_s,
                                cancel_grace_s=s.cancel_grace_s),
        )
        self.intake = Intake(
            pool, self.store, self.runner, self.keys, audience=s.deployment,
            guards=self.guards(), worker=s.instance, identity=identity,
        )
        await self.runner.recover()

    async def consume(self) -> None:
        def intake() -> Intake:
            assert self.intake is not None
            return self.intake

        await consume(lambda: self.runtime.client.jetstream(), intake, self.ready)

    async def leases(self) -> None:
        await self.ready.wait()
        assert self.runner is not None and self.intake is not None
        intake = self.intake

        async def housekeeping() -> None:
            await intake.purge_replay_store()

        await self.runner.lease_loop(housekeeping)

    def load_schedule(self) -> None:
        """Read ``OPS_SCHEDULE`` (or the defaults); a bad file is logged loudly and disables
        the scheduler only."""
        try:
            self.schedule = load_schedule(self.settings.schedule_path)
            self.schedule_problem = ""
            CONFIG_VALID.set(1)
            ENTRIES.set(len(self.schedule.enabled))
            log.info("schedule.loaded", source=self.schedule.source,
                     entries=[j.name for j in self.schedule.enabled],
                     disabled=[j.name for j in self.schedule.jobs if not j.enabled])
        except ConfigError as exc:
            self.schedule, self.schedule_problem = None, str(exc)
            CONFIG_VALID.set(0)
            ENTRIES.set(0)
            log.error("schedule.invalid", problem=str(exc),
                      effect="no scheduled job runs; signed commands are still served")

    async def run_schedule(self) -> None:
        """The scheduler, once the database half is up (cancelled on shutdown)."""
        await self.ready.wait()
        if self.schedule is None:
            return
        assert self.pool is not None and self.store is not None and self.runner is not None
        runner = self.runner
        for job in self.schedule.enabled:
            if not runner.supports(job.action):
                log.warning("schedule.action_not_supported", name=job.name, action=job.action,
                            effect="its runs are recorded rejected (not_supported)")
        self.scheduler = CronScheduler(
            self.schedule, pool=self.pool, store=self.store, runner=runner,
            worker=self.settings.instance, guards=self.guards(), clock=self.clock,
            sleep=self.sleep,
        )
        await self.scheduler.run()

    async def schedule_status(self) -> tuple[bool, str]:
        # Informational: a bad schedule never takes the worker out of service.
        if self.schedule is None:
            return True, (f"invalid ({self.schedule_problem}); no scheduled job runs, "
                          "signed commands are served")
        if self.scheduler is None:
            jobs = self.schedule.enabled
            return True, f"{len(jobs)} entr{'y' if len(jobs) == 1 else 'ies'}, starting"
        return True, self.scheduler.status()

    async def database_ready(self) -> tuple[bool, str]:
        if self.pool is None or not self.ready.is_set():
            return False, self.db_problem or "starting"
        try:
            async with asyncio.timeout(1.5):
                await self.pool.fetchval("SELECT 1")
        except Exception as exc:
            return False, f"query failed: {type(exc).__name__}"
        return True, "ok"

    async def keyring_status(self) -> tuple[bool, str]:
        # Informational: a worker without keys is up, it just rejects every command.
        keyring = self.keys.current()
        if keyring is None:
            return True, f"unavailable ({self.keys.problem}); commands are rejected"
        return True, f"{len(keyring)} key(s)"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.close()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), timeout=5.0)
            except Exception:
                self.pool.terminate()


def build(settings: MaintenanceSettings | None = None,
          handlers: dict[str, ActionHandler] | None = None, *,
          clock: Clock | None = None, sleep: Sleep | None = None) -> Worker:
    """The worker, wired; ``clock`` (aware UTC ``datetime``) and ``sleep`` drive the scheduler
    (tests pass fakes)."""
    settings = settings if isinstance(settings, MaintenanceSettings) else MaintenanceSettings()
    register_consumer()
    broker = make_broker(settings, service=SERVICE)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    keys = KeyringSource(settings.keyring_path)
    worker = Worker(settings, runtime, keys, handlers or default_handlers(),
                    clock=clock or utcnow, sleep=sleep or asyncio.sleep)
    worker.load_schedule()

    async def announce_keyring() -> None:
        keys.current()  # logs loudly, once, when there is no usable keyring

    runtime.on_startup(announce_keyring)
    runtime.add_task("database", worker.start_database)
    runtime.add_task("commands", worker.consume)
    runtime.add_task("leases", worker.leases)
    runtime.add_task("schedule", worker.run_schedule)
    runtime.add_readiness_check("database", worker.database_ready)
    runtime.add_readiness_check("keyring", worker.keyring_status)
    runtime.add_readiness_check("schedule", worker.schedule_status)
    runtime.on_shutdown(worker.close)
    return worker


def create_app(settings: MaintenanceSettings | None = None) -> AsgiFastStream:
    return build(settings).runtime.asgi()
