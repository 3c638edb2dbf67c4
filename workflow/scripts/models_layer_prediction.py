"""Glue: the cross-model layer-prediction table and figure (see zhunt.experiments.layerpred.run_models_layer_prediction)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.experiments.layerpred import run_models_layer_prediction


def main(smk):
    run_models_layer_prediction(
        list(smk.input),
        out_tsv=smk.output.table[0],
        out_md=smk.output.table[1],
        fig_stem=Path(smk.output.fig[0]).with_suffix(""),
    )


snakemake_main(snakemake, main)  # noqa: F821
