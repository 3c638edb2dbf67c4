"""Glue: effective ranks, subspace overlap, FFN alignment, phases, bottleneck (see zhunt.weights.structure)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.weights.structure import run_structure


def main(smk):
    run_structure(
        smk.input.model,
        smk.wildcards.model,
        out_dir=Path(smk.output.bottleneck).parent,
        figures_dir=Path(smk.output.fig_erank[0]).parent,
        k=smk.params.k,
    )


snakemake_main(snakemake, main)  # noqa: F821
