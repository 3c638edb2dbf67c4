"""Glue: rule patching (see zhunt.stages.patching.run_patching)."""

from zhunt.stages import call
from zhunt.stages.patching import run_patching

call(snakemake, run_patching)  # noqa: F821
