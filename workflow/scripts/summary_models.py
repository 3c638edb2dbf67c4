"""Glue: the cross-model page and table (see zhunt.stages.summary.run_models_summary)."""

from functools import partial

from zhunt.stages import call
from zhunt.stages.summary import run_models_summary

call(snakemake, partial(run_models_summary, href=snakemake.report_href))  # noqa: F821
