"""Glue: rule theory (see zhunt.stages.theory.run_theory)."""

from zhunt.stages import call
from zhunt.stages.theory import run_theory

call(snakemake, run_theory)  # noqa: F821
