"""Glue: join the shard stores of a sharded extraction (see zhunt.stages.data.run_gather_activations)."""

from zhunt.stages import call
from zhunt.stages.data import run_gather_activations

call(snakemake, run_gather_activations)  # noqa: F821
