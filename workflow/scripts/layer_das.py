"""Glue: DAS and Z at the DAS sweep's layers (see zhunt.stages.layers.run_layer_das)."""

from zhunt.stages import call
from zhunt.stages.layers import run_layer_das

call(snakemake, run_layer_das)  # noqa: F821
