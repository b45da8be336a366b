"""The job type of the example: an ordinary function; the API and the workers both import this module."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobcast import JobContext, job_type


class ReportPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    weeks: int = Field(4, ge=1, le=52, description="How many weeks the report covers.")
    pause_ms: int = Field(300, ge=0, le=10_000, description="How long each week takes to add up.")


@job_type("weekly_report", payload=ReportPayload, description="Adds up `weeks` weeks of sales, one at a time.")
def weekly_report(ctx: JobContext, p: ReportPayload) -> dict[str, Any]:
    totals = []
    for week in range(1, p.weeks + 1):
        ctx.sleep(p.pause_ms / 1000)
        totals.append({"week": week, "sales": 100 * week})
        ctx.item(totals[-1])
        ctx.progress(100 * week / p.weeks, f"Added up week {week} of {p.weeks}")
    return {"weeks": p.weeks, "total": sum(t["sales"] for t in totals)}
