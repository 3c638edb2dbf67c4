"""Glue: Exp. A's Z interchange at every layer (see zhunt.stages.layers.run_layer_causal)."""

from zhunt.stages import call
from zhunt.stages.layers import run_layer_causal

call(snakemake, run_layer_causal)  # noqa: F821
