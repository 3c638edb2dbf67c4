"""Glue: Exp. B R(k) decomposition (see zhunt.activations.decomposition.run_decomposition)."""

from pathlib import Path

from zhunt.activations.decomposition import run_decomposition
from zhunt.io import snakemake_main


def main(smk):
    run_decomposition(
        smk.input.store,
        smk.input.mask,
        smk.wildcards.model,
        list(smk.params.ks),
        n_random=smk.params.n_random,
        out_tsv=smk.output.table[0],
        out_md=smk.output.table[1],
        fig_stem=Path(smk.output.fig[0]).with_suffix(""),
        site=smk.params.site,
    )


snakemake_main(snakemake, main)  # noqa: F821
