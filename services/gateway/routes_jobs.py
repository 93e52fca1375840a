"""``/api/jobs`` and ``/api/jobs/{job_id}``: maintenance jobs and their states (super-admin).

The list answers from the gateway's in-memory job index (see ``jobs.py``); one job's detail adds
its whole event history, read from the stream on demand.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from shared import JobEvent, JobState

from .auth import super_admin
from .jobs import JOB_ID, history
from .routes_status import AUTH_RESPONSES

router = APIRouter()
ACTION_FILTER = r"^[a-z][a-z0-9_]*(\.[a-z0-9_*]+)?$|^[a-z][a-z0-9_]*\.\*$"


class JobList(BaseModel):
    jobs: list[JobEvent] = Field(description="the latest event of each job, newest first")
    count: int
    complete: bool = Field(description="false until the gateway has subscribed to job events")


class JobDetail(BaseModel):
    job: JobEvent = Field(description="the job's latest event")
    events: list[JobEvent] = Field(description="every event still in the stream, oldest first")


@router.get(
    "/api/jobs",
    response_model=JobList,
    responses=AUTH_RESPONSES,
    summary="Maintenance jobs, newest first (super-admin)",
    dependencies=[Depends(super_admin)],
)
async def list_jobs(
    request: Request,
    state: JobState | None = None,
    action: str | None = Query(None, max_length=64, pattern=ACTION_FILTER,
                               description="an action, or a family such as backup.*"),
    limit: int = Query(50, ge=1, le=500),
) -> JobList:
    index = request.app.state.gateway.jobs
    jobs = index.query(state=state, action=action, limit=limit)
    return JobList(jobs=jobs, count=len(jobs), complete=index.ready)


@router.get(
    "/api/jobs/{job_id}",
    response_model=JobDetail,
    responses={**AUTH_RESPONSES, 404: {"description": "no such job"},
               503: {"description": "the broker is not reachable"}},
    summary="One maintenance job with its history (super-admin)",
    dependencies=[Depends(super_admin)],
)
async def get_job(job_id: str, request: Request) -> JobDetail:
    gateway = request.app.state.gateway
    if not JOB_ID.match(job_id):
        raise HTTPException(404, "no such job")
    if not gateway.broker_connected():
        raise HTTPException(503, "the broker is not reachable: job history unavailable")
    try:
        events = await history(gateway.runtime.client, job_id)
    except TimeoutError:
        raise HTTPException(503, "the job history did not arrive in time") from None
    latest = gateway.jobs.latest.get(job_id) or (events[-1] if events else None)
    if latest is None:
        raise HTTPException(404, "no such job")
    return JobDetail(job=latest, events=events)

