"""The stage layer: one ``run_<rule>`` function per Snakemake rule.

Contract (every module of this package follows it)::

    def run_<rule>(inputs, params, outputs, *, wildcards=None, threads=1) -> None

* ``inputs``, ``params``, ``outputs`` are mappings ``name -> value`` exactly as
  the rule declares them (Snakemake's named ``input:``, ``params:``,
  ``output:``; plain dicts in tests). A value is a path (str), a list of paths,
  or a parameter.
* A stage writes exactly the files of ``outputs``, at the paths it is given: it
  never derives an output path of its own (no file name is chosen twice: the
  rule is the only place that names a file).
* A stage reads its inputs, calls science functions (arrays and frames in,
  frames or dataclasses out, no file I/O), passes their results to the report
  layer for Markdown and figures, and writes every output atomically
  (:mod:`zhunt.io`).
* User mistakes raise :class:`zhunt.errors.ZhuntError` (one line naming the
  config key or file); :func:`call` turns that into a one-line message and a
  non-zero exit.

A workflow script is then two lines of glue::

    from zhunt.stages import call
    from zhunt.stages.theory import run_theory

    call(snakemake, run_theory)  # noqa: F821
"""

from __future__ import annotations

from typing import Callable, Mapping

__all__ = ["call", "named"]


def named(container) -> dict:
    """The named entries of a Snakemake ``input``/``params``/``output``/``wildcards`` object (or any
    mapping) as a plain dict; ``None`` gives ``{}``."""
    if container is None:
        return {}
    if isinstance(container, Mapping):
        return dict(container)
    return dict(container.items())


def call(smk, stage: Callable[..., None]) -> None:
    """Run ``stage(inputs, params, outputs, wildcards=..., threads=...)`` for the Snakemake job
    ``smk``, with logging to the rule's log and one-line user errors (:func:`zhunt.io.snakemake_main`)."""
    from zhunt.io import snakemake_main

    def main(s):
        stage(named(s.input), named(s.params), named(s.output), wildcards=named(getattr(s, "wildcards", None)),
              threads=int(getattr(s, "threads", 1) or 1))

    snakemake_main(smk, main)
