"""The worker's Prometheus metrics (served on its ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter(
    "opsplane_jobs",
    "Maintenance jobs by the state they entered (each job counted once per state).",
    ["action", "state"],
)
JOB_DURATION = Histogram(
    "opsplane_job_duration_seconds",
    "Run time of finished maintenance jobs, from start to a terminal state.",
    ["action"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400),
)
REJECTED = Counter(
    "opsplane_commands_rejected",
    "Signed commands rejected at intake, by reason.",
    ["reason"],
)
RUNNING = Gauge("opsplane_jobs_running", "Maintenance jobs running in this worker.")
INTAKE_RETRIES = Counter(
    "opsplane_command_intake_retries",
    "Command messages handed back to the broker (nak) because a dependency failed.",
)
