"""Glue: ARD-MMD grid of one layer (see zhunt.activations.ard.run_ard_layer)."""

from zhunt.io import snakemake_main
from zhunt.activations.ard import run_ard_layer


def main(smk):
    ard = smk.params.ard
    run_ard_layer(
        smk.input.store,
        smk.input.mask,
        smk.wildcards.model,
        int(smk.wildcards.layer),
        ard["lambdas"],
        lr=ard["lr"],
        min_steps=ard["min_steps"],
        max_steps=ard["max_steps"],
        k_warm=smk.params.k_warm,
        out_h5=smk.output.h5,
        out_tsv=smk.output.tsv,
        site=smk.params.site,
        site_variants=list(smk.params.site_variants),
    )


snakemake_main(snakemake, main)  # noqa: F821
