"""The system view's rules (services/aggregator/state.py), on the aggregator's own state."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.aggregator.state import FORGET_CHECK_S, SystemState, statuses_of_system
from shared import HealthEvent, Heartbeat, Status, utcnow

T0 = utcnow()


def event(check: str, status: Status, *, critical: bool = True, at: datetime = T0,
          interval_s: float = 5.0, skipped: bool = False, **extra: object) -> HealthEvent:
    return HealthEvent(check=check, component=check, status=status, critical=critical, time=at,
                       instance="h1", interval_s=interval_s, skipped=skipped, **extra)  # type: ignore[arg-type]


def beat(service: str, instance: str, started: datetime = T0) -> Heartbeat:
    return Heartbeat(service=service, instance=instance, version="1", started_at=started,
                     interval_s=5.0)


def test_all_passing_is_pass() -> None:
    state = SystemState()
    state.apply_health(event("postgres", Status.PASS))
    state.apply_health(event("mailgun", Status.PASS, skipped=True))
    view = state.system_view(T0)
    assert view.status is Status.PASS and view.checks["mailgun"].skipped


def test_failing_critical_fails_and_non_critical_warns() -> None:
    state = SystemState()
    state.apply_health(event("s3", Status.FAIL, critical=False))
    view = state.system_view(T0)
    assert (view.status, view.checks["s3"].status, view.checks["s3"].reported) == (
        Status.WARN, Status.WARN, Status.FAIL)
    state.apply_health(event("postgres", Status.FAIL, critical=True))
    assert state.system_view(T0).status is Status.FAIL


def test_silence_is_warn_after_3_intervals_then_fail_after_6() -> None:
    state = SystemState()
    state.apply_health(event("postgres", Status.PASS, interval_s=1.0))
    assert state.system_view(T0 + timedelta(seconds=2.9)).status is Status.PASS
    stale = state.system_view(T0 + timedelta(seconds=3.5))
    assert stale.status is Status.WARN
    assert stale.checks["postgres"].output.startswith("no result for 4 s")
    assert state.system_view(T0 + timedelta(seconds=6.5)).status is Status.FAIL
    # Even a non-critical check that went silent only warns.
    quiet = SystemState()
    quiet.apply_health(event("s3", Status.PASS, critical=False, interval_s=1.0))
    assert quiet.system_view(T0 + timedelta(seconds=60)).status is Status.WARN
    # After a day the check is forgotten (a probe that no longer exists).
    assert not quiet.system_view(T0 + timedelta(seconds=FORGET_CHECK_S + 1)).checks


def test_an_older_result_never_replaces_a_newer_one() -> None:
    state = SystemState()
    state.apply_health(event("postgres", Status.FAIL, at=T0))
    state.apply_health(event("postgres", Status.PASS, at=T0 - timedelta(seconds=1)))
    assert state.system_view(T0).checks["postgres"].reported is Status.FAIL


def test_a_dead_expected_service_fails_itself_and_warns_the_system() -> None:
    state = SystemState(expected_services=frozenset({"health", "gateway"}))
    state.apply_heartbeat(beat("health", "h1"), T0)
    view = state.system_view(T0)
    assert view.services["gateway"].status is Status.FAIL and not view.services["gateway"].instances
    assert view.status is Status.WARN
    state.apply_heartbeat(beat("gateway", "g1"), T0)
    assert state.system_view(T0).status is Status.PASS
    later = state.system_view(T0 + timedelta(seconds=16))  # > 3 heartbeats of 5 s
    assert later.services["health"].status is Status.FAIL
    assert later.services["health"].instances[0].alive is False


def test_a_restarted_instance_replaces_the_dead_one_but_a_lost_replica_warns() -> None:
    state = SystemState(expected_services=frozenset({"health"}))
    state.apply_heartbeat(beat("health", "old"), T0)
    restart = T0 + timedelta(seconds=30)
    state.apply_heartbeat(beat("health", "new", started=restart), restart)
    view = state.system_view(restart)
    assert view.services["health"].status is Status.PASS, view.services["health"]
    assert [i.alive for i in view.services["health"].instances] == [True, False]
    # Two replicas, one dies and is not replaced: degraded.
    state.apply_heartbeat(beat("health", "twin", started=restart), restart)
    later = restart + timedelta(seconds=20)
    state.apply_heartbeat(beat("health", "new", started=restart), later)
    assert state.system_view(later).services["health"].status is Status.WARN
    # Forgotten after 10 minutes.
    much_later = later + timedelta(seconds=601)
    state.apply_heartbeat(beat("health", "new", started=restart), much_later)
    final = state.system_view(much_later)
    assert [i.instance for i in final.services["health"].instances] == ["new"]
    assert final.services["health"].status is Status.PASS


def test_merge_takes_newer_news_from_another_replica_only() -> None:
    mine, theirs = SystemState(), SystemState()
    mine.apply_health(event("postgres", Status.PASS, at=T0))
    theirs.apply_health(event("postgres", Status.FAIL, at=T0 + timedelta(seconds=1)))
    theirs.apply_health(event("s3", Status.WARN, critical=False, at=T0 - timedelta(seconds=1)))
    mine.apply_health(event("s3", Status.PASS, critical=False, at=T0))
    theirs.apply_heartbeat(beat("health", "h2"), T0)
    mine.merge_system(theirs.system_view(T0 + timedelta(seconds=1)))
    merged = mine.system_view(T0 + timedelta(seconds=1))
    assert merged.checks["postgres"].reported is Status.FAIL  # theirs is newer
    assert merged.checks["s3"].reported is Status.PASS  # mine is newer
    assert merged.services["health"].instances[0].instance == "h2"


def test_merge_strips_the_staleness_note() -> None:
    theirs = SystemState()
    theirs.apply_health(event("postgres", Status.PASS, interval_s=1.0, output="SELECT 1 in 1 ms"))
    later = T0 + timedelta(seconds=10)
    mine = SystemState()
    mine.merge_system(theirs.system_view(later))
    assert mine.checks["postgres"].output == "SELECT 1 in 1 ms"
    assert mine.system_view(later).checks["postgres"].output.count("no result") == 1


def test_last_backup_comes_from_the_backups_check() -> None:
    state = SystemState()
    state.apply_health(event("backups", Status.WARN, critical=False, observed_value=30.0,
                             observed_unit="h", output="last successful backup k (30.0 h ago)"))
    view = state.system_view(T0)
    assert view.last_backup is not None and view.last_backup["age_hours"] == 30.0
    state.apply_health(event("backups", Status.PASS, skipped=True, critical=False))
    assert state.system_view(T0).last_backup is None


def test_transition_keys_cover_the_whole_checks_and_services() -> None:
    state = SystemState(expected_services=frozenset({"health"}))
    state.apply_health(event("postgres", Status.PASS))
    keys = set(statuses_of_system(state.system_view(T0)))
    assert keys == {("system", "system"), ("check", "postgres"), ("service", "health")}
