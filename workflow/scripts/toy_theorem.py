"""Glue: numerical check of seed 003's Theorem 1 (see zhunt.experiments.toy)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.experiments.toy import run_toy_theorem


def main(smk):
    run_toy_theorem(
        smk.output.table[0],
        smk.output.table[1],
        Path(smk.output.fig[0]).with_suffix(""),
        seed=0,
    )


snakemake_main(snakemake, main)  # noqa: F821
