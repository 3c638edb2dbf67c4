"""Glue: QK operator analysis (see zhunt.weights.qk)."""

from zhunt.stages import call
from zhunt.stages.weights import run_qk_operators

call(snakemake, run_qk_operators)  # noqa: F821
