"""Glue: rule patching_cell (see zhunt.stages.patching.run_patching_cell)."""

from zhunt.stages import call
from zhunt.stages.patching import run_patching_cell

call(snakemake, run_patching_cell)  # noqa: F821
