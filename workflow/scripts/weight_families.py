"""Glue: aligned-vs-raw weight families (see zhunt.weights.families)."""

from zhunt.stages import call
from zhunt.stages.weights import run_weight_families

call(snakemake, run_weight_families)  # noqa: F821
