"""Glue: Z-masks of one layer of one model (see zhunt.weights.masks)."""

from zhunt.stages import call
from zhunt.stages.weights import run_build_masks

call(snakemake, run_build_masks)  # noqa: F821
