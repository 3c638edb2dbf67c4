"""Glue: QK operator analysis (see zhunt.weights.qk)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.weights.qk import run_qk


def main(smk):
    run_qk(
        smk.input.model,
        smk.wildcards.model,
        out_dir=Path(smk.output.cos).parent,
        figures_dir=Path(smk.output.fig[0]).parent,
        anchor=smk.params.anchor,
        factors=smk.params.factors,
        verdict_tsv=smk.output.verdict_tsv,
    )


snakemake_main(snakemake, main)  # noqa: F821
