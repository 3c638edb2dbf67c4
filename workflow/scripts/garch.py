"""Glue: rule garch (see zhunt.stages.theory.run_garch)."""

from zhunt.stages import call
from zhunt.stages.theory import run_garch

call(snakemake, run_garch)  # noqa: F821
