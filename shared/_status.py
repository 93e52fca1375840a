"""The pass/warn/fail status model and its aggregation rules.

Rules (docs/decisions.md, "Status"):
- the overall status is the worst of its parts;
- a failing check that is not critical only degrades to ``warn``;
- a result older than ``stale_after`` is ``warn``, older than ``dead_after`` is ``fail``
  (a silent probe is as bad as a failing one, once it has been silent long enough).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def worst(cls, statuses: Iterable[Status], default: Status | None = None) -> Status:
        """The worst status of ``statuses``; ``default`` (pass) when there are none."""
        worst = default or cls.PASS
        for status in statuses:
            if status.rank > worst.rank:
                worst = status
        return worst


_RANK = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


def effective_status(
    status: Status,
    *,
    critical: bool,
    age_s: float,
    stale_after_s: float,
    dead_after_s: float,
) -> Status:
    """The status a check contributes to the overall status.

    ``age_s`` is how old the check's last result is. A non-critical check never makes the whole
    system fail; staleness applies to both kinds.
    """
    if age_s > dead_after_s:
        contributed = Status.FAIL
    elif age_s > stale_after_s:
        contributed = Status.worst([status, Status.WARN])
    else:
        contributed = status
    if not critical and contributed is Status.FAIL:
        return Status.WARN
    return contributed
