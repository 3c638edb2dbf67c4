"""Glue: Phase 2 metrics of each layer's own Z at every layer (see zhunt.experiments.layerpred.run_layer_sweep)."""

from zhunt.io import snakemake_main
from zhunt.experiments.layerpred import run_layer_sweep


def main(smk):
    model = smk.wildcards.model
    run_layer_sweep(
        smk.input.store,
        smk.input.model,
        model,
        int(smk.params.k),
        site=smk.params.site,
        n_random=smk.params.n_random,
        out_tsv=smk.output.table[0],
        out_md=smk.output.table[1],
        where=f"models.{model}.study.patch_k",
    )


snakemake_main(snakemake, main)  # noqa: F821
