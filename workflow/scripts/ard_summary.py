"""Glue: rule ard_summary (see zhunt.stages.ard.run_ard_summary)."""

from zhunt.stages import call
from zhunt.stages.ard import run_ard_summary

call(snakemake, run_ard_summary)  # noqa: F821
