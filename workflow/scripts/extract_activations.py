"""Glue: per-layer hidden states of one prompt set (see zhunt.stages.data.run_extract_activations)."""

from zhunt.stages import call
from zhunt.stages.data import run_extract_activations

call(snakemake, run_extract_activations)  # noqa: F821
