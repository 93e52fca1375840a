"""``job.cancel``: stop another job.

A queued job is cancelled at once (it never starts). A running job is asked to stop: its
worker (this one or another replica, told through the job's row) sets the job's cancel event;
the job ends ``cancelled`` at its next step, and a statement it is running is interrupted. This
job waits up to ``WAIT_S`` for that and reports the target's final state. Cancelling a job that
already ended changes nothing and says so (``cancelled: false``); an unknown job id fails.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared import Progress

from .context import ActionContext, ActionFailed

WAIT_S = 60.0


async def job_cancel(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    target = str(getattr(params, "job_id", ""))
    if target == ctx.job_id:
        raise ActionFailed("a job.cancel cannot cancel itself")
    before = await ctx.jobs.cancel(target, by=ctx.job_id)
    if before == "unknown":
        raise ActionFailed(f"no such job: {target}")
    if before not in ("queued", "running"):
        return {"job_id": target, "cancelled": False, "state": before,
                "message": f"job {target} had already ended ({before})"}
    await ctx.progress(Progress(done=0, total=1, unit="jobs"), f"cancelling {target}")
    final = await ctx.jobs.wait_terminal(target, WAIT_S)
    if final is None:
        raise ActionFailed(
            f"job {target} was asked to stop but had not stopped after {WAIT_S:.0f} s"
        )
    await ctx.progress(Progress(done=1, total=1, unit="jobs"), f"{target} {final}")
    return {"job_id": target, "cancelled": final == "cancelled", "state": final,
            "previous_state": before}
