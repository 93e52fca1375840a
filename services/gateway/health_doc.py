"""The public health document (draft-inadarei-api-health-check, ``application/health+json``).

Public means public: no instance names, hosts, error texts or internal outputs, only
``component:measurement`` checks with status, value and time. Operators get details from
``/super-admin/status``.
"""

from __future__ import annotations

from typing import Any

from shared import VERSION, Status, SystemView

MEDIA_TYPE = "application/health+json"
STALE_WARN_S = 15.0
STALE_FAIL_S = 60.0


def view_freshness(age_s: float | None) -> tuple[Status, str]:
    if age_s is None:
        return Status.FAIL, "no status view yet"
    if age_s > STALE_FAIL_S:
        return Status.FAIL, f"status view is {age_s:.0f} s old"
    if age_s > STALE_WARN_S:
        return Status.WARN, f"status view is {age_s:.0f} s old"
    return Status.PASS, ""


def health_document(
    view: SystemView | None, age_s: float | None, deployment: str
) -> dict[str, Any]:
    fresh_status, fresh_note = view_freshness(age_s)
    checks: dict[str, list[dict[str, Any]]] = {}
    statuses = [fresh_status]
    if view is not None:
        statuses.append(view.status)
        for check in view.checks.values():
            entry: dict[str, Any] = {
                "componentId": check.component,
                "componentType": check.component_type,
                "status": check.status.value,
                "time": check.time.isoformat(),
            }
            if check.observed_value is not None:
                entry["observedValue"] = check.observed_value
                entry["observedUnit"] = check.observed_unit or ""
            if check.skipped:
                entry["output"] = "not configured"
            checks.setdefault(f"{check.component}:{check.measurement}", []).append(entry)
    freshness: dict[str, Any] = {
        "componentId": "opsplane",
        "componentType": "system",
        "status": fresh_status.value,
        "observedUnit": "s",
    }
    if age_s is not None:
        freshness["observedValue"] = round(age_s, 3)
    if fresh_note:
        freshness["output"] = fresh_note
    checks["opsplane:statusAge"] = [freshness]
    status = Status.worst(statuses)
    return {
        "status": status.value,
        "version": VERSION.split(".")[0],
        "releaseId": VERSION,
        "serviceId": deployment,
        "description": f"health of {deployment}",
        "checks": checks,
    }


def http_status(document: dict[str, Any]) -> int:
    return 503 if document["status"] == Status.FAIL.value else 200
