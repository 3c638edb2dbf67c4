"""Glue: one model's summary page, headline JSON and checklist (see zhunt.stages.summary.run_summary)."""

from functools import partial

from zhunt.stages import call
from zhunt.stages.summary import report_links, run_summary

call(snakemake, partial(run_summary, href=report_links(snakemake)))  # noqa: F821
