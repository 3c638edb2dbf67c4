"""Glue: rule datadriven_z (see zhunt.stages.zspace.run_datadriven_z)."""

from zhunt.stages import call
from zhunt.stages.zspace import run_datadriven_z

call(snakemake, run_datadriven_z)  # noqa: F821
