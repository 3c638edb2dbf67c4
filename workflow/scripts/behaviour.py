"""Glue: Phase 0 behaviour (see zhunt.stages.behaviour.run_behaviour)."""

from zhunt.stages import call
from zhunt.stages.behaviour import run_behaviour

call(snakemake, run_behaviour)  # noqa: F821
