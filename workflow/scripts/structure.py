"""Glue: effective ranks, subspace overlap, FFN alignment, phases, bottleneck (see zhunt.weights.structure)."""

from zhunt.stages import call
from zhunt.stages.weights import run_structure

call(snakemake, run_structure)  # noqa: F821
