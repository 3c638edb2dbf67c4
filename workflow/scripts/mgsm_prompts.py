"""Glue: an MGSM prompt set (the benchmark's own files) as a wide prompt table (see zhunt.stages.data.run_mgsm_prompts)."""

from zhunt.stages import call
from zhunt.stages.data import run_mgsm_prompts

call(snakemake, run_mgsm_prompts)  # noqa: F821
