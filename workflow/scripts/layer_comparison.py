"""Glue: weight-only layer scores vs the data sweep (see zhunt.experiments.layerpred.run_layer_comparison)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.experiments.layerpred import run_layer_comparison


def main(smk):
    run_layer_comparison(
        smk.input.scores,
        smk.input.sweep,
        smk.wildcards.model,
        causal_tsv=smk.input.get("causal"),  # patching/subspaces.tsv, where the rule lists it
        site=smk.params.site,
        out_comparison=smk.output.comparison[0],
        out_comparison_md=smk.output.comparison[1],
        out_correlations=smk.output.correlations[0],
        out_correlations_md=smk.output.correlations[1],
        out_verdict=smk.output.verdict,
        fig_stem=Path(smk.output.fig[0]).with_suffix(""),
    )


snakemake_main(snakemake, main)  # noqa: F821
