"""Progress lines for long loops: ``n/N, elapsed, ETA`` at most every ``interval`` seconds.

Workflow scripts send Python logging to the rule's ``log:`` file (:func:`zhunt.io.snakemake_main`),
so a loop wrapped in :class:`Progress` shows up there while it runs::

    tail -f logs/<model>/train_organism.log
"""

from __future__ import annotations

import logging
import time

#: Seconds between two progress lines of one loop (the first and the last step are always logged).
PROGRESS_INTERVAL_S = 30.0


def _fmt(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Log ``what n/N (p%), elapsed, ETA`` to a logger, at most every ``interval`` seconds.

    The ETA assumes the remaining items cost as much, on average, as the ones done so far:
    ``eta = elapsed * (N - n) / n``.

    Parameters
    ----------
    total : int
        Number of items (steps, cells, layers, ...).
    what : str
        What an item is, for the line (``"step"``, ``"ARD run"``).
    logger : logging.Logger, optional
        Default ``logging.getLogger("zhunt.progress")``.
    interval : float
        Minimum seconds between lines (default :data:`PROGRESS_INTERVAL_S`).
    clock : callable
        Time source (``time.perf_counter``; tests pass a fake clock).
    """

    def __init__(self, total: int, what: str = "item", logger: logging.Logger | None = None,
                 interval: float = PROGRESS_INTERVAL_S, clock=time.perf_counter):
        self.total = max(0, int(total))
        self.what = what
        self.log = logger or logging.getLogger("zhunt.progress")
        self.interval = float(interval)
        self.clock = clock
        self.t0 = clock()
        self.last = None
        self.n = 0
        self.lines: list[str] = []

    def line(self, n: int) -> str:
        """The progress line after ``n`` items."""
        elapsed = self.clock() - self.t0
        pct = 100.0 * n / self.total if self.total else 100.0
        eta = elapsed * (self.total - n) / n if n else float("nan")
        eta_s = _fmt(eta) if n else "?"
        return f"{self.what} {n}/{self.total} ({pct:.0f}%), elapsed {_fmt(elapsed)}, ETA {eta_s}"

    def update(self, n: int | None = None) -> None:
        """Record that ``n`` items are done (default: one more); log when due."""
        self.n = self.n + 1 if n is None else int(n)
        now = self.clock()
        if self.last is None or now - self.last >= self.interval or self.n >= self.total:
            text = self.line(self.n)
            self.lines.append(text)
            self.log.info("%s", text)
            self.last = now


def track(iterable, total: int | None = None, what: str = "item", logger=None,
          interval: float = PROGRESS_INTERVAL_S):
    """Yield from ``iterable``, logging progress after each item (see :class:`Progress`)."""
    if total is None:
        total = len(iterable)
    prog = Progress(total, what, logger, interval)
    for item in iterable:
        yield item
        prog.update()
