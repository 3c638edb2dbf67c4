"""Glue: the organism's held-out prompt set in the paired wide format (see zhunt.stages.data.run_organism_prompts)."""

from zhunt.stages import call
from zhunt.stages.data import run_organism_prompts

call(snakemake, run_organism_prompts)  # noqa: F821
