"""Maintenance jobs on ``/metrics``, from the gateway's job index (``jobs.py``).

Labels are bounded: ``action`` is one of the contract's actions (anything else is ``other``),
``state`` one of the six job states. What an operator alerts on: a backup that has not
succeeded for too long (``opsplane_job_last_success_timestamp_seconds{action="backup.create"}``)
and failed jobs (``opsplane_jobs{state="failed"}`` rising).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from shared import ACTIONS

from .jobs import JobIndex


def _action(name: str) -> str:
    return name if name in ACTIONS else "other"


class JobCollector:
    def __init__(self, index: JobIndex) -> None:
        self._index = index

    def collect(self) -> Iterator[Metric]:
        events = list(self._index.latest.values())
        counts = Counter((_action(e.action), e.state) for e in events)
        jobs = GaugeMetricFamily(
            "opsplane_jobs",
            "Maintenance jobs still in the event stream (30 days), by action and latest state.",
            labels=["action", "state"],
        )
        for (action, state), count in sorted(counts.items()):
            jobs.add_metric([action, state], float(count))
        yield jobs
        newest: dict[str, float] = {}
        for event in events:
            if event.state == "succeeded":
                action, stamp = _action(event.action), event.time.timestamp()
                newest[action] = max(newest.get(action, 0.0), stamp)
        last = GaugeMetricFamily(
            "opsplane_job_last_success_timestamp_seconds",
            "When a job of this action last succeeded (Unix time).",
            labels=["action"],
        )
        for action, stamp in sorted(newest.items()):
            last.add_metric([action], stamp)
        yield last
