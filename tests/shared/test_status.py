from shared import Status, effective_status


def test_worst_orders_pass_warn_fail() -> None:
    assert Status.worst([Status.PASS, Status.WARN]) is Status.WARN
    assert Status.worst([Status.WARN, Status.FAIL, Status.PASS]) is Status.FAIL
    assert Status.worst([]) is Status.PASS


def rules(status: Status, *, critical: bool = True, age_s: float = 0.0) -> Status:
    return effective_status(
        status, critical=critical, age_s=age_s, stale_after_s=15, dead_after_s=30
    )


def test_fresh_results_count_as_reported() -> None:
    assert rules(Status.PASS) is Status.PASS
    assert rules(Status.FAIL) is Status.FAIL


def test_a_failing_non_critical_check_only_warns() -> None:
    assert rules(Status.FAIL, critical=False) is Status.WARN
    assert rules(Status.WARN, critical=False) is Status.WARN


def test_a_silent_check_warns_then_fails() -> None:
    assert rules(Status.PASS, age_s=16) is Status.WARN
    assert rules(Status.PASS, age_s=31) is Status.FAIL
    # ...but a non-critical one never fails the system, even when silent.
    assert rules(Status.PASS, critical=False, age_s=31) is Status.WARN
