"""Glue: aligned-vs-raw weight families (see zhunt.weights.families)."""

from pathlib import Path

from zhunt.weights.families import run_families
from zhunt.io import snakemake_main


def main(smk):
    run_families(
        smk.input.model,
        smk.wildcards.model,
        out_dir=Path(smk.output.table).parent,
        figures_dir=Path(smk.output.fig[0]).parent,
        side=smk.params.side,
        verdict_tsv=smk.output.verdict_tsv,
    )


snakemake_main(snakemake, main)  # noqa: F821
