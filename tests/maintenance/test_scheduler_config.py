"""The schedule file: validation (every problem names its entry), the defaults, fire times in
time zones (DST included), jitter and the deterministic job ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.maintenance.schedule_config import (
    DEFAULT_MISFIRE_GRACE_S,
    ScheduledJob,
    load_schedule,
    parse_schedule,
    scheduled_job_id,
)
from shared import BackupCreate, BackupVerify, ConfigError, DbVacuum

GOOD = """
timezone = "Europe/Berlin"
misfire_grace_s = 120

[[jobs]]
name = "nightly-backup"
cron = "0 2 * * *"
action = "backup.create"
params = { label = "nightly" }
jitter_s = 30

[[jobs]]
name = "vacuum.invoices"
cron = "15 4 1 * *"
action = "db.vacuum"
params = { tables = ["public.invoices"] }
timezone = "UTC"
misfire_grace_s = 5
enabled = false
"""


def one(entry: str, top: str = "") -> str:
    return f"{top}\n[[jobs]]\n{entry}\n"


def test_a_good_file_loads_with_its_params_validated_and_defaults_filled(tmp_path: Path) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text(GOOD)
    schedule = load_schedule(path)
    backup, vacuum = schedule.jobs
    assert (backup.name, backup.action, backup.timezone) == ("nightly-backup", "backup.create",
                                                            "Europe/Berlin")
    assert backup.params == BackupCreate(label="nightly")
    assert (backup.jitter_s, backup.misfire_grace_s, backup.enabled) == (30.0, 120.0, True)
    assert backup.issuer == "scheduler:nightly-backup"
    assert vacuum.params == DbVacuum(tables=["public.invoices"])
    assert (vacuum.timezone, vacuum.misfire_grace_s, vacuum.enabled) == ("UTC", 5.0, False)
    assert [j.name for j in schedule.enabled] == ["nightly-backup"]
    assert schedule.source == f"OPS_SCHEDULE {path}"


def test_without_a_file_the_defaults_cover_backups_the_restore_drill_and_maintenance() -> None:
    schedule = load_schedule(None)
    table = {j.name: (j.cron, j.action, j.params.model_dump(exclude_none=True))
             for j in schedule.jobs}
    assert table == {
        "nightly-backup": ("0 2 * * *", "backup.create", {"label": "nightly"}),
        "backup-verify": ("0 3 * * *", "backup.verify", {"mode": "quick"}),
        "restore-drill": ("0 4 * * 0", "backup.verify", {"mode": "restore"}),
        "backup-prune": ("0 5 * * *", "backup.prune", {"dry_run": False}),
        "weekly-db-report": ("0 6 * * 1", "db.report", {}),
        "monthly-vacuum": ("0 4 1 * *", "db.vacuum", {}),
    }
    assert all(j.timezone == "UTC" and j.enabled for j in schedule.jobs)
    assert all(j.misfire_grace_s == DEFAULT_MISFIRE_GRACE_S for j in schedule.jobs)


def test_include_defaults_adds_them_and_a_same_named_entry_replaces_one() -> None:
    schedule = parse_schedule(one(
        'name = "nightly-backup"\ncron = "30 1 * * *"\naction = "backup.create"\nenabled = false',
        "include_defaults = true"))
    names = [j.name for j in schedule.jobs]
    assert len(names) == 6 and "restore-drill" in names
    replaced = schedule.by_name("nightly-backup")
    assert (replaced.cron, replaced.enabled) == ("30 1 * * *", False)
    assert parse_schedule("jobs = []").jobs == ()  # an empty file: nothing on a clock


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('name = "x"\ncron = "61 2 * * *"\naction = "db.report"', "invalid cron expression"),
        ('name = "x"\ncron = "0 2 * *"\naction = "db.report"', "must have 5 fields"),
        ('name = "x"\ncron = "0 0 2 * * *"\naction = "db.report"', "must have 5 fields"),
        ('name = "x"\ncron = "0 2 30 2 *"\naction = "db.report"', "never fires"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "db.explode"', "unknown action 'db.explode'"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "backup.verify"\nparams = { mode = "full" }',
         "backup.verify: mode"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "backup.verify"',
         "backup.verify: mode: required"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "db.report"\nparams = { extra = 1 }',
         "extra"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "db.report"\ntimezone = "Mars/Base"',
         "unknown timezone 'Mars/Base'"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "db.report"\njitter_s = -1', "jitter_s"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "db.report"\nenabled = "yes"', "enabled"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "db.report"\nevery = "1h"', "every"),
        ('name = "x"\ncron = "0 2 * * *"\naction = "job.cancel"\n'
         'params = { job_id = "3f2b8c1e-9d4a-4e4b-8f3a-0c5d2e1b7a69" }', "cannot be scheduled"),
    ],
)
def test_a_bad_entry_is_a_config_error_naming_it(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_schedule(one(entry), "OPS_SCHEDULE s.toml")
    assert "OPS_SCHEDULE s.toml: jobs[0] 'x'" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("purge.app_data", '{ scope = "all", confirm = "CONFIRM" }'),
        ("backup.restore", '{ key = "a/b.dump", database = "app", confirm = "app" }'),
    ],
)
def test_destructive_actions_are_refused_even_with_valid_params(action: str, params: str) -> None:
    text = one(f'name = "wipe"\ncron = "0 3 * * *"\naction = "{action}"\nparams = {params}')
    with pytest.raises(ConfigError, match=rf"jobs\[0\] 'wipe': {action} is destructive and "
                                          "cannot be scheduled: it needs a person's signed"):
        parse_schedule(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[jobs]\nname = 'x'", "not valid TOML"),
        ('timezone = "Nowhere/Land"', "unknown timezone"),
        ("misfire_grace_s = -5", "misfire_grace_s"),
        ("[[job]]\nname = 'x'", "job: Extra inputs"),
        ("jobs = [1]", "jobs.0"),
        (one('name = "a"\ncron = "0 1 * * *"\naction = "db.report"')
         + one('name = "a"\ncron = "0 2 * * *"\naction = "db.report"'), "duplicate entry name"),
        (one('name = "Bad Name"\ncron = "0 1 * * *"\naction = "db.report"'), "name"),
    ],
)
def test_a_bad_file_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_schedule(text)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"OPS_SCHEDULE .*nope\.toml: No such file"):
        load_schedule(tmp_path / "nope.toml")


def _entry(cron: str, timezone: str = "UTC", **extra: object) -> ScheduledJob:
    lines = ['name = "e"', f'cron = "{cron}"', 'action = "db.report"',
             f'timezone = "{timezone}"'] + [f"{k} = {v}" for k, v in extra.items()]
    return parse_schedule(one("\n".join(lines))).jobs[0]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_next_fire_reads_the_cron_in_the_entry_timezone() -> None:
    berlin = _entry("0 2 * * *", "Europe/Berlin")
    assert berlin.next_fire(utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 1)  # CET = UTC+1
    assert berlin.next_fire(utc(2026, 7, 10, 12)) == utc(2026, 7, 11, 0)  # CEST = UTC+2
    new_york = _entry("30 8 * * 1-5", "America/New_York")
    assert new_york.next_fire(utc(2026, 1, 9, 14)) == utc(2026, 1, 12, 13, 30)  # Fri -> Mon
    plain = _entry("0 2 * * *")
    assert plain.next_fire(utc(2026, 1, 1, 2)) == utc(2026, 1, 2, 2), "strictly after"
    assert plain.next_fire(utc(2026, 1, 1, 1, 59, 59)) == utc(2026, 1, 1, 2)
    assert _entry("@weekly").next_fire(utc(2026, 1, 1)) == utc(2026, 1, 4)  # Sunday 00:00


def test_dst_gaps_fire_after_the_gap_and_a_repeated_hour_runs_a_fixed_time_job_once() -> None:
    daily = _entry("30 2 * * *", "Europe/Berlin")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist: runs at 03:00 local.
    assert daily.next_fire(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice: runs once.
    first = daily.next_fire(utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)
    assert daily.next_fire(first) == utc(2026, 10, 26, 1, 30), "no second run at 02:30 CET"
    # An interval job (hour field '*') keeps its rhythm through the repeated hour.
    half_hourly = _entry("*/30 * * * *", "Europe/Berlin")
    fires, at = [], utc(2026, 10, 24, 23, 50)
    for _ in range(6):
        at = half_hourly.next_fire(at)
        fires.append(at)
    assert fires == [utc(2026, 10, 25, 0) + timedelta(minutes=30 * i) for i in range(6)]


def test_jitter_is_the_same_on_every_replica_and_within_its_bound() -> None:
    entry = _entry("0 * * * *", jitter_s=300)
    again = _entry("0 * * * *", jitter_s=300)
    fires = [utc(2026, 1, 1, h) for h in range(24)]
    delays = [entry.jitter(f) for f in fires]
    assert delays == [again.jitter(f) for f in fires]
    assert all(0 <= d < 300 for d in delays) and len(set(delays)) > 20
    assert entry.run_at(fires[0]) == fires[0] + timedelta(seconds=delays[0])
    assert _entry("0 * * * *").jitter(fires[0]) == 0.0


def test_a_scheduled_job_id_is_a_canonical_uuid_of_name_and_fire_time() -> None:
    fire = utc(2026, 1, 1, 2)
    job_id = scheduled_job_id("nightly-backup", fire)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        job_id)
    berlin = fire.astimezone(_entry("0 2 * * *", "Europe/Berlin").tz)
    assert scheduled_job_id("nightly-backup", berlin) == job_id, "same instant, same id"
    assert scheduled_job_id("nightly-backup", fire + timedelta(days=1)) != job_id
    assert scheduled_job_id("other", fire) != job_id
    assert BackupVerify(mode="quick").mode == "quick"
