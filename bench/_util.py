"""Timing helpers shared by the bench scripts (not part of the package).

Every bench measures *ratios* side by side in one process: the arms are run in
interleaved order (arm order rotated each repeat), so load drift from other
processes on the machine hits all arms alike, and the median of the repeats is
reported.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Mapping


def machine() -> str:
    """One line: CPU model, cores, memory, load average (from /proc)."""
    model = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2 ** 20:.1f} GiB"
                break
    except OSError:
        pass
    la = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"cpu={model!r} cores={os.cpu_count()} mem={mem} load average={la}"


def interleaved(arms: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                cpu: dict | None = None) -> dict[str, list[float]]:
    """Wall times of each arm, ``repeats`` times, arm order rotated every repeat.

    Each arm is called ``warmup`` times first (not timed). When ``cpu`` is a
    dict, the process CPU time of each call (all threads) is appended to
    ``cpu[arm]`` (less sensitive to other processes than the wall time).
    """
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            c0, t0 = time.process_time(), time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - c0)
    return times


def print_arms(wall: Mapping[str, list[float]], cpu: Mapping[str, list[float]], width: int = 10,
               extra: Callable[[str], str] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Print one line per arm (median CPU, median wall, every wall time, ``extra(arm)``); return the
    median CPU and wall times."""
    med_c, med_w = medians(cpu), medians(wall)
    for a in wall:
        print(f"  {a:{width}s} median CPU {med_c[a]:.3f}s, wall {med_w[a]:.3f}s "
              f"(wall all: {', '.join(f'{t:.3f}' for t in wall[a])})" + (f"  {extra(a)}" if extra else ""))
    return med_c, med_w


def medians(times: Mapping[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in times.items()}


def spread(v: list[float]) -> str:
    """``min..max`` of a list of seconds."""
    return f"{min(v):.3f}..{max(v):.3f}"


def verdict(ratio: float, goal: float, kind: str = "<=") -> str:
    ok = ratio <= goal if kind == "<=" else ratio >= goal
    return f"goal {kind} {goal:g}: {'met' if ok else 'MISSED'}"
