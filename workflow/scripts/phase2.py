"""Glue: rule phase2 (see zhunt.stages.zspace.run_phase2)."""

from zhunt.stages import call
from zhunt.stages.zspace import run_phase2

call(snakemake, run_phase2)  # noqa: F821
