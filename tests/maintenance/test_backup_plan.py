"""Pure parts of the backup engine: part sizes, key layout, DSN handling, the retention plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.maintenance.backups import (
    Candidate,
    RetentionPolicy,
    backup_key,
    base_part_size,
    manifest_key,
    part_size_for,
    plan_prune,
)
from services.maintenance.backups.layout import MAX_PART_SIZE, MIB, MIN_PART_SIZE, capacity
from services.maintenance.backups.pgtools import child_env, parse_version, split_dsn, with_database

TIB = 1024 * 1024 * MIB


def test_small_databases_use_s3s_minimum_part_size() -> None:
    assert base_part_size(None) == MIN_PART_SIZE == 5 * MIB
    assert base_part_size(0) == base_part_size(12 * MIB) == base_part_size(10 * 1024 * MIB)


def test_part_size_grows_with_the_estimate_in_whole_mib() -> None:
    size = base_part_size(100 * 1024 * MIB)  # 100 GiB: 2 x 100 GiB / 5,000 = 40.96 MiB
    assert size == 41 * MIB and size * 5_000 >= 2 * 100 * 1024 * MIB
    assert (size - MIB) * 5_000 < 2 * 100 * 1024 * MIB  # the smallest whole MiB that fits


def test_parts_past_5000_double_every_1000() -> None:
    base = 8 * MIB
    assert [part_size_for(n, base) for n in (1, 5000, 5001, 6000, 6001, 10_000)] == [
        base,
        base,
        2 * base,
        2 * base,
        4 * base,
        32 * base,
    ]
    with pytest.raises(ValueError):
        part_size_for(10_001, base)
    with pytest.raises(ValueError):
        part_size_for(0, base)


@given(st.integers(min_value=0, max_value=5 * TIB))
@settings(max_examples=300)
def test_ten_thousand_parts_always_hold_the_estimate_and_then_some(estimate: int) -> None:
    base = base_part_size(estimate)
    assert MIN_PART_SIZE <= base <= MAX_PART_SIZE and base % MIB == 0
    assert 5_000 * base >= 2 * estimate  # the estimate (x2) fits in the first half
    # ...and a 10x surprise too, up to S3's largest object (5 TiB)
    assert capacity(base) >= min(10 * max(estimate, MIN_PART_SIZE), 5 * TIB)
    assert all(MIN_PART_SIZE <= part_size_for(n, base) <= MAX_PART_SIZE for n in (1, 7_500, 10_000))


def test_key_layout_and_manifest_beside_it() -> None:
    when = datetime(2025, 3, 9, 23, 59, 58, tzinfo=UTC)
    key = backup_key("/backups/prod/", "app/db x", "5e0c-jid", when)
    assert key == "backups/prod/app%2Fdb%20x/2025/03/09/20250309T235958Z-5e0c-jid.dump"
    assert manifest_key(key) == key.removesuffix(".dump") + ".manifest.json"
    assert backup_key("", "app", "j", when).startswith("app/2025/03/09/")
    local = datetime(2025, 3, 10, 1, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))
    assert "/2025/03/10/20250310T010000Z-" in backup_key("p", "app", "j", local)  # always UTC


def test_the_password_is_split_from_the_dsn() -> None:
    info = split_dsn("postgresql://app:p%40ss%3Aw@db.internal:6432/sales?sslmode=require")
    assert info.password == "p@ss:w" and "p%40ss" not in info.url and "@db.internal" in info.url
    assert info.url == "postgresql://app@db.internal:6432/sales?sslmode=require"
    assert info.database == "sales" and info.user == "app"
    assert child_env(info)["PGPASSWORD"] == "p@ss:w"
    query = split_dsn("postgres://app@h/db?password=secret&application_name=x")
    assert query.password == "secret" and "secret" not in query.url
    assert "PGPASSWORD" not in child_env(split_dsn("postgresql://app@h/db"))
    assert with_database("postgresql://a:b@h:1/x?sslmode=require", "y z") == (
        "postgresql://a:b@h:1/y z?sslmode=require"
    )


def test_pg_dump_versions_are_read_whole() -> None:
    assert parse_version("pg_dump (PostgreSQL) 16.2") == (16, "16.2")
    assert parse_version("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)") == (15, "15.20")
    assert parse_version("pg_dump (PostgreSQL) 9.6.24") == (9, "9.6.24")


# --- the retention plan ------------------------------------------------------------------

NOW = datetime(2025, 6, 30, 12, tzinfo=UTC)


def daily(n: int, database: str = "app", hour: int = 2) -> list[Candidate]:
    """One backup a day for the last ``n`` days, newest first."""
    return [
        Candidate(f"{database}/{i:03d}", database, "succeeded", NOW - timedelta(days=i, hours=hour))
        for i in range(n)
    ]


def test_seven_dailies_are_kept_by_default() -> None:
    backups = daily(10)
    plan = plan_prune(backups, RetentionPolicy(), NOW)
    assert set(plan.keep) == {b.key for b in backups[:7]}
    assert set(plan.prune) == {b.key for b in backups[7:]} and plan.clean == ()


def test_several_backups_a_day_keep_the_newest_of_each_day() -> None:
    morning, evening = daily(3, hour=10), daily(3, hour=1)
    plan = plan_prune(morning + evening, RetentionPolicy(daily=2), NOW)
    assert set(plan.keep) == {evening[0].key, evening[1].key}


def test_weekly_and_monthly_reach_further_back() -> None:
    backups = daily(120)
    plan = plan_prune(backups, RetentionPolicy(daily=3, weekly=4, monthly=4), NOW)
    kept = [b for b in backups if b.key in plan.keep]
    assert len(kept) <= 11
    assert min(b.at for b in kept) < NOW - timedelta(days=85)  # a month-old one survived
    weeks = {b.at.isocalendar()[:2] for b in kept}
    assert len(weeks) >= 4


def test_failed_and_stale_running_backups_are_cleaned_fresh_running_ones_untouched() -> None:
    backups = [
        *daily(2),
        Candidate("failed", "app", "failed", NOW - timedelta(hours=1)),
        Candidate("stale", "app", "running", NOW - timedelta(days=2)),
        Candidate("fresh", "app", "running", NOW - timedelta(minutes=5)),
    ]
    plan = plan_prune(backups, RetentionPolicy(daily=7), NOW)
    assert plan.clean == ("failed", "stale") and "fresh" not in plan.keep + plan.prune


def test_databases_are_planned_apart() -> None:
    plan = plan_prune(daily(3, "a") + daily(3, "b"), RetentionPolicy(daily=1), NOW)
    assert set(plan.keep) == {"a/000", "b/000"}


candidates = st.lists(
    st.builds(
        Candidate,
        key=st.uuids().map(str),
        database=st.sampled_from(["app", "other"]),
        status=st.sampled_from(["succeeded", "succeeded", "succeeded", "failed", "running"]),
        at=st.datetimes(
            min_value=datetime(2023, 1, 1), max_value=datetime(2025, 6, 30), timezones=st.just(UTC)
        ),
    ),
    max_size=60,
    unique_by=lambda c: c.key,
)
policies = st.builds(
    RetentionPolicy,
    daily=st.integers(0, 10),
    weekly=st.integers(0, 6),
    monthly=st.integers(0, 6),
)


@given(candidates, policies)
@settings(max_examples=300, deadline=None)
def test_the_plan_never_prunes_the_newest_keeps_at_most_the_policy_and_is_idempotent(
    backups: list[Candidate], policy: RetentionPolicy
) -> None:
    plan = plan_prune(backups, policy, NOW)
    succeeded = [b for b in backups if b.status == "succeeded"]
    assert set(plan.keep) | set(plan.prune) == {b.key for b in succeeded}
    assert not set(plan.keep) & set(plan.prune)
    limit = max(1, policy.daily + policy.weekly + policy.monthly)
    for database in {b.database for b in succeeded}:
        mine = [b for b in succeeded if b.database == database]
        newest = max(mine, key=lambda b: (b.at, b.key))
        assert newest.key in plan.keep
        assert len([b for b in mine if b.key in plan.keep]) <= limit
    again = plan_prune([b for b in succeeded if b.key in plan.keep], policy, NOW)
    assert again.prune == () and set(again.keep) == set(plan.keep)
