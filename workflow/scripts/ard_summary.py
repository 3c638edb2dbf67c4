"""Glue: ARD-MMD summaries across layers (see zhunt.activations.ard.summarise_ard)."""

from pathlib import Path

from zhunt.activations.ard import summarise_ard
from zhunt.io import snakemake_main


def main(smk):
    summarise_ard(
        list(smk.input.tsv),
        list(smk.input.h5),
        smk.params.primary,
        smk.wildcards.model,
        smk.output.table[0],
        smk.output.table[1],
        Path(smk.output.fig_size[0]).parent,
        heldout_tsv=smk.input.heldout,
        out_headline=smk.output.headline,
        site=smk.params.site,
    )


snakemake_main(snakemake, main)  # noqa: F821
