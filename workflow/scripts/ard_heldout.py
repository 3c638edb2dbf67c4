"""Glue: rule ard_heldout (see zhunt.stages.ard.run_ard_heldout)."""

from zhunt.stages import call
from zhunt.stages.ard import run_ard_heldout

call(snakemake, run_ard_heldout)  # noqa: F821
