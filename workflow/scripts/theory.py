"""Glue: seed-003 tests on one activation store (see zhunt.activations.theory.run_theory)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.data.numerals import store_numeral_ids
from zhunt.activations.theory import run_theory


def main(smk):
    run_theory(
        smk.input.store,
        smk.wildcards.model,
        out_dir=Path(smk.output.coint).parent,
        fig_dir=Path(smk.output.fig_snr[0]).parent,
        nn_threshold=smk.params.nn_threshold,
        pca_dim=smk.params.pca_dim,
        coint_components=smk.params.coint_components,
        generation_lengths=smk.input.generations,
        site=smk.params.site,
        layers=list(smk.params.layers),
        numeral_ids=store_numeral_ids(smk.input.model, smk.input.store),
        digit_tsv=smk.output.digit,
    )


snakemake_main(snakemake, main)  # noqa: F821
