"""Profile a finished (or running) Snakemake run from its log: which rules held the cores, and for how long.

Usage::

    python bench/timeline.py                       # the newest .snakemake/log/*.snakemake.log here
    python bench/timeline.py LOG [LOG ...] [--cores 2] [--top 15]

Several logs (the segments of one run resumed after an interruption) are read in order; the time
between segments is not counted. From each job's start stamp (the ``[date]`` line before
``rule X:``), its ``threads:`` and ``resources: ... gpu=1``, and its ``Finished jobid`` stamp, the
script rebuilds, second by second, how many of ``--cores`` cores the running jobs asked for, and
prints:

* the run's wall time and the time spent with 0, 1, ... cores asked for;
* the time during which the only running job was a one-thread GPU-tagged job (under the workflow
  profile's ``gpu=1`` no other GPU job may start beside it, so the other cores idle unless a
  CPU-only job is ready);
* the rules ranked by the sum of their jobs' wall times.

The stamps have one-second resolution; jobs that had not finished when a log ends are counted up
to its last stamp. This reads what Snakemake printed; the per-job CPU time and peak RSS are in the
``benchmarks/`` files.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def parse(log: Path) -> list[dict]:
    """Jobs of one log: ``rule``, ``id``, ``threads``, ``gpu``, ``start``, ``end`` (None if unfinished)."""
    now, cur, jobs, last = None, None, {}, None
    for raw in log.read_text(errors="replace").splitlines():
        line = raw.strip()
        m = STAMP.match(line)
        if m:
            now = last = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        m = START.match(line)
        if m and now is not None:
            cur = {"rule": m.group(1), "start": now, "threads": 1, "gpu": False, "end": None}
            continue
        if cur is not None:
            if (m := re.match(r"jobid: (\d+)", line)):
                cur["id"] = int(m.group(1))
            elif (m := re.match(r"threads: (\d+)", line)):
                cur["threads"] = int(m.group(1))
            elif line.startswith("resources:") and re.search(r"\bgpu=1\b", line):
                cur["gpu"] = True
            elif line == "" or line.startswith(("Shell command", "Select jobs", "DAG of jobs")):
                if "id" in cur:
                    jobs[cur["id"]] = cur
                cur = None
        m = re.match(r"^Finished jobid: (\d+)", line)
        if m and now is not None and int(m.group(1)) in jobs:
            jobs[int(m.group(1))]["end"] = now
    for j in jobs.values():
        j["end"] = j["end"] or last
    return list(jobs.values())


def occupancy(jobs: list[dict], cores: int) -> tuple[float, collections.Counter, float]:
    """``(wall_s, seconds by cores asked for, seconds with a lone one-thread GPU job)``."""
    if not jobs:
        return 0.0, collections.Counter(), 0.0
    t0, t1 = min(j["start"] for j in jobs), max(j["end"] for j in jobs)
    n = int((t1 - t0).total_seconds())
    asked = [0] * n
    running = [[] for _ in range(n)]
    for j in jobs:
        a, b = int((j["start"] - t0).total_seconds()), int((j["end"] - t0).total_seconds())
        for s in range(a, b):
            asked[s] += j["threads"]
            running[s].append(j)
    by = collections.Counter(min(cores, a) for a in asked)
    lone = sum(1 for r in running if len(r) == 1 and r[0]["gpu"] and r[0]["threads"] == 1)
    return float(n), by, float(lone)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="*", type=Path)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    logs = args.logs or sorted(Path(".snakemake/log").glob("*.snakemake.log"))[-1:]
    if not logs:
        raise SystemExit("timeline: no log given and none under .snakemake/log")
    wall, by, lone, per_rule = 0.0, collections.Counter(), 0.0, collections.defaultdict(lambda: [0, 0.0])
    for log in logs:
        jobs = parse(log)
        w, b, lo = occupancy(jobs, args.cores)
        wall, lone = wall + w, lone + lo
        by.update(b)
        for j in jobs:
            per_rule[j["rule"]][0] += 1
            per_rule[j["rule"]][1] += (j["end"] - j["start"]).total_seconds()
    busy = sum(k * v for k, v in by.items()) / max(wall, 1.0)
    print(f"{len(logs)} log(s); wall {wall / 60:.1f} min; cores asked for: "
          + ", ".join(f"{k}: {v / 60:.1f} min" for k, v in sorted(by.items())))
    print(f"mean cores asked for {busy:.2f} of {args.cores}; a lone one-thread GPU job ran for {lone / 60:.1f} min")
    print(f"{'rule':28s} {'jobs':>5s} {'sum of walls':>13s}")
    for rule, (n, s) in sorted(per_rule.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"{rule:28s} {n:5d} {s / 60:9.1f} min")


if __name__ == "__main__":
    main()
