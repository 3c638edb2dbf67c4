"""Reading Snakemake's dry-run output (tests and the workflow benchmark both need it)."""

from __future__ import annotations

import re

__all__ = ["scheduled_jobs"]


def scheduled_jobs(stdout: str) -> dict[str, int]:
    """Jobs a Snakemake (dry) run scheduled, from its "Job stats" table.

    Parameters
    ----------
    stdout : str
        What ``snakemake -n`` printed.

    Returns
    -------
    dict
        ``{rule: count}`` without the ``total`` row; empty when nothing was scheduled.
    """
    jobs: dict[str, int] = {}
    block = stdout.split("Job stats:", 1)
    if len(block) < 2:
        return jobs
    for line in block[1].splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs
