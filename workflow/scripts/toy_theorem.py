"""Glue: numerical check of seed 003's Theorem 1 (see zhunt.stages.toy.run_toy_theorem)."""

from zhunt.stages import call
from zhunt.stages.toy import run_toy_theorem

call(snakemake, run_toy_theorem)  # noqa: F821
