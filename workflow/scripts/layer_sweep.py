"""Glue: Phase 2 metrics of each layer's own Z at every layer (see zhunt.stages.layers.run_layer_sweep)."""

from zhunt.stages import call
from zhunt.stages.layers import run_layer_sweep

call(snakemake, run_layer_sweep)  # noqa: F821
