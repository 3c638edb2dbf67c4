"""Glue: rule patching_interchange (see zhunt.stages.patching.run_patching_interchange)."""

from zhunt.stages import call
from zhunt.stages.patching import run_patching_interchange

call(snakemake, run_patching_interchange)  # noqa: F821
