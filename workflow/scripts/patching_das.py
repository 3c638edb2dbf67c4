"""Glue: rule patching_das (see zhunt.stages.patching.run_patching_das)."""

from zhunt.stages import call
from zhunt.stages.patching import run_patching_das

call(snakemake, run_patching_das)  # noqa: F821
