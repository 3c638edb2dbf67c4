"""Glue: Exp. D bridge (see zhunt.experiments.bridge.run_bridge)."""

from pathlib import Path

from zhunt.experiments.bridge import run_bridge
from zhunt.io import snakemake_main


def main(smk):
    layers = list(smk.params.layers)
    run_bridge(
        smk.input.store,
        dict(zip(layers, smk.input.masks)),
        smk.wildcards.model,
        layers,
        list(smk.params.ks),
        smk.output.table[0],
        smk.output.table[1],
        Path(smk.output.fig_spectra[0]).parent,
        n_permutations=smk.params.n_permutations,
        site=smk.params.site,
        site_variants=list(smk.params.site_variants),
    )


snakemake_main(snakemake, main)  # noqa: F821
