"""Glue: rule ard_layer (see zhunt.stages.ard.run_ard_layer)."""

from zhunt.stages import call
from zhunt.stages.ard import run_ard_layer

call(snakemake, run_ard_layer)  # noqa: F821
