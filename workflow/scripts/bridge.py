"""Glue: Exp. D bridge (see zhunt.stages.bridge.run_bridge)."""

from zhunt.stages import call
from zhunt.stages.bridge import run_bridge

call(snakemake, run_bridge)  # noqa: F821
