"""Glue: rule decomposition (see zhunt.stages.decomposition.run_decomposition)."""

from zhunt.stages import call
from zhunt.stages.decomposition import run_decomposition

call(snakemake, run_decomposition)  # noqa: F821
