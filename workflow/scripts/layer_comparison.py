"""Glue: weight-only layer scores vs the data sweep (see zhunt.stages.layers.run_layer_comparison)."""

from zhunt.stages import call
from zhunt.stages.layers import run_layer_comparison

call(snakemake, run_layer_comparison)  # noqa: F821
